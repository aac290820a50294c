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

import glob
import hashlib
import json
import math
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save as save_tensors
from sklearn.utils.validation import check_is_fitted

from finvae._atomic import atomic_path, write_text
from finvae._exceptions import DataError
from finvae.nn._returns import ReturnsVAE
from finvae.scoring import _PROBS, STATISTICS
from finvae.simulation import dynamics_arrays, dynamics_from_arrays
from finvae.training import seeded

__all__ = [
    "check_int", "check_keys", "check_model_folder", "check_number", "check_params", "check_state", "check_state_dict",
    "check_tail", "check_vectors", "load_model", "read_json", "read_tensors", "save_model",
]

#: What a folder written by ``FinVAE.save`` holds.
MODEL_FILES = ("finvae.json", "model.safetensors")

_REFIT = "Fit the model again and save it (FinVAE.save), or load a folder that FinVAE.save wrote."


def check_model_folder(path: str | Path) -> Path:
    """``path`` as a Path, if it is a folder that holds ``finvae.json``; else a DataError saying what it is."""
    path = Path(path)
    if not path.exists():
        # atomic_folder moves a model aside before it moves the new one in: a crash between leaves it there.
        aside = sorted(path.parent.glob(f".{glob.escape(path.name)}.*.old")) if path.parent.is_dir() else []
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


#: Saved models: the ``format`` written by ``FinVAE.save``. Older formats' calibrations do not fit
#: today's parts; loading them says why (``_OLDER_FORMATS``).
SAVE_FORMAT = "finvae.FinVAE/5"
_OLDER_FORMATS = {
    "finvae.FinVAE/1": "its residual score part was the mean squared residual",
    "finvae.FinVAE/2": "its KL and single-asset score parts were not relative to their recent levels",
    "finvae.FinVAE/3": "its KL and single-asset score parts were relative to their recent levels",
    "finvae.FinVAE/4": "its score had a KL part where it now has a market part (KL and index move)",
}
#: The entries of ``finvae.json`` that :meth:`FinVAE.load` reads (checked by ``_persistence.check_state``).
_STATE_KEYS = ("params", "threshold_", "n_features_in_", "feature_names_in_", "calibration_",
               "asset_calibration_", "dynamics_dates", "history_")

def save_model(model, path: str | Path) -> Path:
    """:meth:`finvae.FinVAE.save`: a fitted model to the folder ``path``, tensors in safetensors, the rest in JSON."""
    check_is_fitted(model)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{path} is a file; FinVAE.save writes a folder. Pass a folder's path.")
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.model_.state_dict().items()}
    tensors["mean_"] = torch.from_numpy(model.mean_)
    tensors["scale_"] = torch.from_numpy(model.scale_)
    dynamics_dates = None
    if getattr(model, "dynamics_", None) is not None:
        arrays, dynamics_dates = dynamics_arrays(model.dynamics_)
        tensors.update({f"dynamics.{name}": torch.from_numpy(array) for name, array in arrays.items()})
    # Everything is serialised before any file is touched, so an error leaves a previous save whole. Each
    # file is written beside its final name, then renamed over it (never half a file); the JSON names the
    # tensors file's hash, so that a crash between the two renames is caught at load, not read as one model.
    payload = save_tensors(tensors)
    if isinstance(model.random_state, np.random.RandomState):  # here, where the warning can name the caller's line
        warnings.warn("random_state is a RandomState instance, which cannot be saved as JSON: it is saved as None. "
                      "The fitted model is saved whole; only a refit of the loaded one would draw other numbers.",
                      UserWarning, stacklevel=3)
    state = {
        "format": SAVE_FORMAT,
        "tensors_sha256": hashlib.sha256(payload).hexdigest(),
        "params": model.get_params(),
        "threshold_": model.threshold_,
        "n_features_in_": model.n_features_in_,
        "feature_names_in_": None if not hasattr(model, "feature_names_in_") else list(model.feature_names_in_),
        "asset_names_": None if not hasattr(model, "asset_names_") else [
            list(label) if isinstance(label, tuple) else label for label in model.asset_names_],
        "calibration_": model.calibration_,
        "asset_calibration_": model.asset_calibration_,
        "dynamics_dates": dynamics_dates,
        "history_": model.history_.reset_index().to_dict(orient="list"),
        "history_attrs": model.history_.attrs,  # best_epoch
    }
    text = json.dumps(state, indent=1, default=_json_value)
    path.mkdir(parents=True, exist_ok=True)
    with atomic_path(path / "model.safetensors") as temporary:
        temporary.write_bytes(payload)
    write_text(text, path / "finvae.json")
    return path


def load_model(cls, path: str | Path):
    """:meth:`finvae.FinVAE.load`: a model saved by :func:`save_model` (reads JSON and safetensors only)."""
    path = check_model_folder(path)
    state = read_json(path / "finvae.json")
    if state.get("format") in _OLDER_FORMATS:
        raise DataError(
            f"{path} holds a FinVAE saved by an older finvae ({state['format']}): "
            f"{_OLDER_FORMATS[state['format']]}, and its calibration does not fit today's score. "
            "Fit the model again and save it."
        )
    if state.get("format") != SAVE_FORMAT:
        from finvae import __version__

        name, _, version = str(state.get("format")).rpartition("/")
        ours = int(SAVE_FORMAT.rpartition("/")[2])
        if name == SAVE_FORMAT.rpartition("/")[0] and version.isdigit():
            newer = int(version) > ours
            raise DataError(
                f"{path} holds a FinVAE saved in format {version}, and this finvae ({__version__}) reads format "
                f"{ours}: " + ("upgrade finvae to load it." if newer else "fit the model again with this finvae "
                               "and save it (older formats lack what this version computes).")
            )
        raise DataError(f"{path} does not hold a saved FinVAE (format {state.get('format')!r}).")
    check_state(state, _STATE_KEYS, path / "finvae.json")
    params = check_params(cls, state["params"], path / "finvae.json")  # lists as tuples: JSON has none
    model = cls(**params)
    tensors = read_tensors(path / "model.safetensors")
    check_vectors(tensors, ("mean_", "scale_"), state["n_features_in_"], path / "model.safetensors")
    model.mean_ = tensors.pop("mean_").numpy()
    model.scale_ = tensors.pop("scale_").numpy()
    if not (np.isfinite(model.scale_).all() and (model.scale_ > 0).all()):  # fit refuses them: so does load
        raise DataError(f"{path / 'model.safetensors'}: 'scale_' must hold each asset's positive training "
                        "volatility; it holds zero, negative or non-finite values. Fit the model again and "
                        "save it.")
    model.n_features_in_ = state["n_features_in_"]
    if state["feature_names_in_"] is not None:
        model.feature_names_in_ = np.asarray(state["feature_names_in_"], dtype=object)
    if state.get("asset_names_") is not None:  # absent in folders saved before it existed
        model.asset_names_ = np.empty(model.n_features_in_, dtype=object)
        model.asset_names_[:] = [tuple(label) if isinstance(label, list) else label
                                 for label in state["asset_names_"]]
    dynamics = {name.removeprefix("dynamics."): tensors.pop(name).numpy()
                for name in [name for name in tensors if name.startswith("dynamics.")]}
    model.dynamics_ = None
    if state["dynamics_dates"] is not None:
        try:
            model.dynamics_ = dynamics_from_arrays(dynamics, state["dynamics_dates"], model.latent_dim,
                                                   state["n_features_in_"])
            if len(model.dynamics_.variances) != len(model._vol_halflives()):
                raise ValueError(f"dynamics.variances has {len(model.dynamics_.variances)} volatility legs, "
                                 f"but vol_halflife={model.vol_halflife!r} needs {len(model._vol_halflives())}")
        except (KeyError, ValueError, TypeError) as error:
            raise DataError(f"{path / 'model.safetensors'}: the simulation dynamics are damaged ({error}). "
                            "Fit the model again and save it.") from None
    with seeded(0, exclusive=True):  # initial weights, overwritten below: the caller's torch RNG stays as it was
        model.model_ = ReturnsVAE(model.n_features_in_, model.window, model.latent_dim, model.hidden)
    tensors = check_state_dict(model.model_, tensors, path / "model.safetensors", prefix="model.")
    model.model_.load_state_dict(tensors)
    model.model_.eval()
    model.threshold_ = state["threshold_"]
    model._fitted_structure = model._structure()
    json_file = path / "finvae.json"
    for name in STATISTICS:
        check_tail(state["calibration_"].get(name), f"calibration_.{name}", len(_PROBS), json_file)
    for i, entry in enumerate(state["asset_calibration_"]):
        check_tail(entry, f"asset_calibration_[{i}]", len(_PROBS), json_file)
    model.calibration_ = state["calibration_"]
    model.asset_calibration_ = state["asset_calibration_"]
    try:
        model.history_ = pd.DataFrame(state["history_"]).set_index("epoch")
    except (ValueError, TypeError) as error:
        raise DataError(f"{json_file}: 'history_' is not a table of equal-length columns ({error}). "
                        "Fit the model again and save it.") from None
    attrs = state.get("history_attrs", {})
    if not isinstance(attrs, dict):
        raise DataError(f"{json_file}: 'history_attrs' must be a mapping (such as {{\"best_epoch\": 12}}); got "
                        f"{type(attrs).__name__}. Fit the model again and save it.")
    model.history_.attrs.update(attrs)
    # Last, so that a damaged file gets the more precise errors above.
    if "tensors_sha256" in state and \
            hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest() != state["tensors_sha256"]:
        raise DataError(f"{path}: model.safetensors and finvae.json come from different saves (a save was "
                        "interrupted, or one file was copied from another model). Fit the model again and save it.")
    return model


def _json_value(value):
    """JSON for what ``json`` cannot write: numpy numbers (e.g. a grid search's parameters) and a RandomState."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.random.RandomState):  # save_model has warned
        return None
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
