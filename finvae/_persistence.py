"""Checks on a saved model's files, so that a damaged folder ends in a :class:`~finvae.DataError`.

:meth:`finvae.FinVAE.load` reads a folder written by :meth:`~finvae.FinVAE.save`:
``finvae.json`` (parameters, calibration, names) and ``model.safetensors``
(the tensors). A file truncated by a full disk, edited by hand, or a folder
that holds something else should not end in a bare ``JSONDecodeError``,
``SafetensorError`` or a ``RuntimeError`` from ``load_state_dict``: each
function here raises :class:`~finvae.DataError` naming the file and the fault.
Nothing here runs code from the files (JSON and safetensors only).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from finvae._exceptions import DataError

__all__ = [
    "check_int", "check_keys", "check_model_folder", "check_number", "check_params", "check_state", "check_state_dict",
    "check_tail", "check_vectors", "read_json", "read_tensors",
]

#: What a folder written by ``FinVAE.save`` holds.
MODEL_FILES = ("finvae.json", "model.safetensors")

_REFIT = "Fit the model again and save it (FinVAE.save), or load a folder that FinVAE.save wrote."


def check_model_folder(path: str | Path) -> Path:
    """``path`` as a Path, if it is a folder that holds ``finvae.json``; else a DataError saying what it is."""
    path = Path(path)
    if not path.exists():
        # atomic_folder moves a model aside before it moves the new one in: a crash between leaves it there.
        aside = sorted(path.parent.glob(f".{path.name}.*.old")) if path.parent.is_dir() else []
        if aside:
            raise DataError(f"{path}: no such model folder, but {aside[-1]} holds the model that a replacement "
                            f"interrupted by a crash moved aside. Rename it back: mv '{aside[-1]}' '{path}'.")
        raise DataError(f"{path}: no such model folder. Pass the folder that FinVAE.save (or `finvae fit`) wrote.")
    if not path.is_dir():
        raise DataError(f"{path} is a file, not a model folder. Pass the folder that FinVAE.save (or `finvae fit`) "
                        "wrote: it holds finvae.json and model.safetensors.")
    if not (path / MODEL_FILES[0]).is_file():
        held = sorted(p.name for p in path.iterdir())[:5]
        raise DataError(
            f"{path} is not a finvae model folder: it has no {MODEL_FILES[0]} "
            f"({'it holds ' + ', '.join(held) if held else 'it is empty'}). "
            "Pass the folder that FinVAE.save (or `finvae fit`) wrote: it holds finvae.json and model.safetensors."
        )
    return path


def read_json(path: str | Path, required_keys: Iterable[str] = ()) -> dict:
    """The JSON object in ``path``; DataError if the file is missing, not valid JSON, not an object, or lacks keys."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path} is missing: the model folder is incomplete. {_REFIT}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} cannot be read ({exc}). {_REFIT}") from None
    try:
        state = json.loads(text)
    except json.JSONDecodeError as exc:
        truncated = " (the file looks truncated)" if not text.rstrip().endswith("}") else ""
        raise DataError(
            f"{path} is not valid JSON{truncated}: {exc.msg} (line {exc.lineno}, column {exc.colno}). "
            f"The file was damaged or edited. {_REFIT}"
        ) from None
    if not isinstance(state, dict):
        raise DataError(f"{path} holds a JSON {type(state).__name__}, not the object FinVAE.save writes. {_REFIT}")
    check_keys(state, required_keys, path)
    return state


def check_keys(state: Mapping, required_keys: Iterable[str], file: str | Path) -> None:
    """DataError naming ``file`` if ``state`` lacks any of ``required_keys``."""
    missing = [key for key in required_keys if key not in state]
    if missing:
        raise DataError(f"{file} lacks the entr{'y' if len(missing) == 1 else 'ies'} {', '.join(map(repr, missing))}: "
                        f"it was edited or written by something else. {_REFIT}")


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors in the safetensors file ``path``; DataError if it is missing or not a valid safetensors file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is missing: the model folder is incomplete. {_REFIT}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise DataError(f"{path} is not a valid safetensors file ({exc}): it was truncated or damaged. {_REFIT}") \
            from None


def _check_tensor(name: str, tensor: torch.Tensor, shape: tuple[int, ...], file: Path) -> None:
    if tuple(tensor.shape) != tuple(shape):
        raise DataError(f"{file}: tensor {name!r} has shape {tuple(tensor.shape)}, but the model needs "
                        f"{tuple(shape)}. The file was edited or belongs to another model. {_REFIT}")
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise DataError(f"{file}: tensor {name!r} holds NaN or infinite values. {_REFIT}")


def check_vectors(tensors: Mapping[str, torch.Tensor], names: Iterable[str], length: int, file: str | Path) -> None:
    """DataError naming ``file`` unless each of ``names`` is in ``tensors`` with shape ``(length,)`` and finite."""
    file = Path(file)
    for name in names:
        if name not in tensors:
            raise DataError(f"{file} lacks the tensor {name!r}. {_REFIT}")
        _check_tensor(name, tensors[name], (length,), file)


def check_state_dict(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor], file: str | Path,
                     prefix: str = "") -> dict[str, torch.Tensor]:
    """``tensors`` (names without ``prefix``) if they are exactly ``module``'s state, with its shapes; else a DataError.

    Compares the names and shapes with ``module.state_dict()`` (a freshly
    built module of the saved sizes), so the error names the tensor that is
    missing, unexpected or mis-shaped rather than ``load_state_dict``'s list.
    Every name in ``tensors`` must start with ``prefix``; errors name tensors
    as the file does (with it).
    """
    file = Path(file)
    expected = {prefix + name: value for name, value in module.state_dict().items()}
    missing = [name for name in expected if name not in tensors]
    if missing:
        raise DataError(f"{file} lacks the tensor(s) {', '.join(map(repr, missing[:5]))}"
                        f"{f' (and {len(missing) - 5} more)' if len(missing) > 5 else ''}. {_REFIT}")
    extra = [name for name in tensors if name not in expected]
    if extra:
        raise DataError(f"{file} holds tensor(s) this model does not have: {', '.join(map(repr, extra[:5]))}. "
                        f"The file was edited or written by another version. {_REFIT}")
    for name, reference in expected.items():
        _check_tensor(name, tensors[name], tuple(reference.shape), file)
    return {name.removeprefix(prefix): tensor for name, tensor in tensors.items()}


def check_int(value, name: str, file: str | Path, least: int = 1) -> int:
    """``value`` if it is an integer >= ``least`` (not a bool); else a DataError naming ``file`` and ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise DataError(f"{file}: {name!r} must be an integer >= {least}, got {value!r}. {_REFIT}")
    return value


def check_number(value, name: str, file: str | Path) -> float:
    """``value`` as a float if it is a finite number; else a DataError naming ``file`` and ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DataError(f"{file}: {name!r} must be a finite number, got {value!r}. {_REFIT}")
    return float(value)


def check_params(cls: type, params, file: str | Path) -> dict:
    """``params``, lists as tuples (JSON has none), if valid constructor parameters of ``cls``; else a DataError.

    Checks the names against ``cls``'s parameters and the values with
    scikit-learn's own parameter validation.
    """
    if not isinstance(params, dict):
        raise DataError(f"{file}: 'params' must be an object of parameters, got {type(params).__name__}. {_REFIT}")
    unknown = sorted(set(params) - set(cls._get_param_names()))
    if unknown:
        raise DataError(f"{file}: 'params' holds unknown parameter(s) {', '.join(map(repr, unknown))}: written by "
                        f"another version of finvae, or edited. {_REFIT}")
    params = {key: tuple(value) if isinstance(value, list) else value for key, value in params.items()}
    try:
        cls(**params)._validate_params()
    except (TypeError, ValueError) as exc:
        raise DataError(f"{file}: 'params' are not valid {cls.__name__} parameters: {exc}. {_REFIT}") from None
    return params


def check_tail(entry, name: str, grid_length: int, file: str | Path) -> None:
    """DataError naming ``file`` unless ``entry`` is a tail calibration: a ``grid`` of ``grid_length`` finite
    numbers in rising order and a finite, positive ``rate`` (what :func:`finvae.scoring.fit_tail` writes)."""
    grid = entry.get("grid") if isinstance(entry, dict) else None
    ok = (isinstance(grid, list) and len(grid) == grid_length
          and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in grid)
          and all(a <= b for a, b in zip(grid, grid[1:], strict=False)))
    rate = entry.get("rate") if isinstance(entry, dict) else None
    if not ok or isinstance(rate, bool) or not isinstance(rate, int | float) or not (math.isfinite(rate) and rate > 0):
        raise DataError(f"{file}: the calibration {name!r} must be an object with a rising 'grid' of {grid_length} "
                        f"numbers and a positive 'rate'. {_REFIT}")


def check_state(state: Mapping, required_keys: Iterable[str], file: str | Path) -> None:
    """DataError naming ``file`` unless ``state`` has ``required_keys`` and its common entries have usable types.

    Checks, where present: ``n_features_in_`` (an integer >= 1),
    ``feature_names_in_`` (null or that many strings), ``asset_names_`` (null or that
    many labels), ``threshold_`` (a
    finite number), ``calibration_`` (an object),
    ``asset_calibration_`` (a list of one entry per asset) and ``history_``
    (an object with an ``epoch`` column).
    """
    check_keys(state, required_keys, file)
    n = check_int(state["n_features_in_"], "n_features_in_", file) if "n_features_in_" in state else None
    names = state.get("feature_names_in_")
    if names is not None and not (isinstance(names, list) and all(isinstance(name, str) for name in names)
                                  and (n is None or len(names) == n)):
        raise DataError(f"{file}: 'feature_names_in_' must be null or a list of {n} asset names. {_REFIT}")
    labels = state.get("asset_names_")
    if labels is not None and not (isinstance(labels, list) and (n is None or len(labels) == n) and all(
            isinstance(label, str | int | list) and not isinstance(label, bool) for label in labels)):
        raise DataError(f"{file}: 'asset_names_' must be null or a list of {n} asset labels. {_REFIT}")
    if "threshold_" in state:
        check_number(state["threshold_"], "threshold_", file)
    if "calibration_" in state and not isinstance(state["calibration_"], dict):
        raise DataError(f"{file}: 'calibration_' must be an object. {_REFIT}")
    per_asset = state.get("asset_calibration_")
    if "asset_calibration_" in state and not (isinstance(per_asset, list) and (n is None or len(per_asset) == n)):
        raise DataError(f"{file}: 'asset_calibration_' must be a list of {n} entries, one per asset. {_REFIT}")
    history = state.get("history_")
    if "history_" in state and not (isinstance(history, dict) and "epoch" in history):
        raise DataError(f"{file}: 'history_' must be an object with an 'epoch' column. {_REFIT}")
