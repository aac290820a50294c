"""Checkpoints of :func:`finvae.backtest.walk_forward`: one small JSON file per finished block.

A block's file is named by a key, the SHA-256 of a canonical JSON document of
everything its result depends on:

- the estimator's class (module and name) and its parameters
  (``get_params(deep=True)``, nested estimators by class and parameters),
  written as JSON with sorted keys;
- the block's rows: training rows ``[lo, s)`` and scored rows ``[s, e)``, and
  the ``contamination`` setting (how the threshold is set);
- a fingerprint of the data the block uses: the returns' values (as float64
  bytes), dates and asset names of rows ``0 .. e - 1`` (a block reads nothing
  after its last day), and the columns' dtypes;
- the finvae version and this file format's version.

A re-run with the same folder finds the files of the blocks it already did and
skips their fits; any other parameter, row layout or data value gives another
key, so another file. Files are written to a temporary file in the folder and
then moved into place with :func:`os.replace` (atomic), so a crash leaves
either the whole file or none. They hold JSON only (no pickle): loading one
runs no code. A file that cannot be read, or whose key or length does not
match, is ignored with a warning and its block refitted.

:func:`fit_or_load` does the same for a single fitted model (the main job's
reference model): saved as a model folder (safetensors + JSON) named by the key
of its estimator and training data, and loaded instead of refitted on a re-run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import uuid
import warnings
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pandas as pd

from finvae._atomic import atomic_folder, write_text

__all__ = ["BlockStore", "fit_or_load"]

#: Version of the files' layout and of the key's recipe; part of every key.
FORMAT = 1


def _qualified(obj) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def plain(value):
    """``value`` as JSON-able data that is the same from one run (and process) to the next.

    Estimators become their class and parameters; arrays their dtype, shape and
    SHA-256; numbers floats or ints; tuples lists; numpy random generators
    (``RandomState``, ``Generator``) their state. Anything else falls back to
    its ``repr``; a ``repr`` that holds a memory address gets a random tag too,
    so that its block is never reused rather than wrongly reused (CPython
    gives a freed address to the next object).
    """
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        value = float(value)
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        return {"ndarray": str(data.dtype), "shape": list(data.shape), "sha256": hashlib.sha256(data).hexdigest()}
    if isinstance(value, np.random.RandomState):  # a fit draws from its state: the same state, the same fit
        return {"RandomState": plain(list(value.get_state()))}
    if isinstance(value, np.random.Generator):
        return {"Generator": plain(value.bit_generator.state)}
    if isinstance(value, type):
        return {"callable": _qualified(value)}
    if hasattr(value, "get_params"):  # less verbose, which changes no result (also in a Pipeline's steps)
        params = {name: v for name, v in value.get_params(deep=False).items() if name != "verbose"}
        return {"class": _qualified(value), "params": plain(params)}
    if callable(value) and hasattr(value, "__qualname__") and "<" not in value.__qualname__:
        return {"callable": f"{getattr(value, '__module__', '?')}.{value.__qualname__}"}
    text = repr(value)
    return {"repr": text, "unique": uuid.uuid4().hex} if " at 0x" in text else {"repr": text}


def _result_params(estimator) -> dict:
    """The estimator's parameters, less those that cannot change a result (``verbose``: progress output only)."""
    return {name: value for name, value in estimator.get_params(deep=True).items()
            if name != "verbose" and not name.endswith("__verbose")}


def _digest(document) -> str:
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _encode(x: float):
    """A float as strict JSON: itself (exact: Python writes the shortest repr that reads back the same), or a tag."""
    return x if math.isfinite(x) else (None if math.isnan(x) else ("inf" if x > 0 else "-inf"))


def _decode(x) -> float:
    return math.nan if x is None else float(x)


def writable_folder(directory, what: str = "checkpoint folder") -> Path:
    """``directory`` as a Path, created if missing; :class:`DataError` naming ``what`` if it cannot be written to.

    Tries a file in it: a folder that exists but is read-only (or not a real folder, as under /proc) is found
    now, not when the first result would be written.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=directory, prefix=".probe-", suffix=".tmp")
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        from finvae._exceptions import DataError

        raise DataError(f"Cannot write to the {what} {directory} ({exc.strerror or exc}); "
                        "pass a folder you can write to.") from None
    return directory


class BlockStore:
    """The checkpoint folder of one walk-forward: keys of its blocks, and their results on disk.

    Parameters
    ----------
    directory : str or PathLike
        Folder of the block files; created if missing. Several walk-forwards
        may share it: their keys differ.
    estimator : estimator
        The (unfitted) estimator that every block clones.
    returns : DataFrame
        The walk-forward's returns (already validated).
    contamination : float or None
        ``walk_forward``'s setting.
    """

    def __init__(self, directory, estimator, returns: pd.DataFrame, contamination: float | None) -> None:
        from finvae import __version__

        self.directory = writable_folder(directory)  # checked now, not after the first refit
        self._common = {
            "format": FORMAT,
            "finvae": __version__,
            "estimator": _qualified(estimator),
            "params": plain(_result_params(estimator)),
            "contamination": plain(contamination),
            "columns": [str(c) for c in returns.columns],
            "columns_hash": hashlib.sha256(
                pd.util.hash_pandas_object(returns.columns, index=False).to_numpy()).hexdigest(),
            "dtypes": [str(d) for d in returns.dtypes],
            "index_dtype": str(returns.index.dtype),
        }
        self._values = np.ascontiguousarray(returns.to_numpy(dtype=np.float64, na_value=np.nan))
        self._dates = np.ascontiguousarray(pd.util.hash_pandas_object(returns.index, index=False).to_numpy())
        self._index = returns.index

    def keys(self, blocks: list[tuple[int, int, int]]) -> list[str]:
        """The key of each block ``(lo, s, e)``: training rows ``[lo, s)``, scored rows ``[s, e)``."""
        values, dates = hashlib.sha256(), hashlib.sha256()
        seen, prefix = 0, {}
        for end in sorted({e for _, _, e in blocks}):  # one pass: a running hash of the rows, read at each end
            values.update(self._values[seen:end])
            dates.update(self._dates[seen:end])
            seen = end
            prefix[end] = values.copy().hexdigest() + dates.copy().hexdigest()
        return [_digest({**self._common, "lo": lo, "s": s, "e": e, "data": prefix[e]}) for lo, s, e in blocks]

    def path(self, key: str) -> Path:
        return self.directory / f"block-{key}.json"

    def load(self, key: str, n_scored: int) -> tuple[np.ndarray, float] | None:
        """The block's (scores, threshold) if its file is there and sound, else None."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            with open(path, encoding="utf-8") as file:
                saved = json.load(file)
            if not isinstance(saved, dict):
                raise ValueError(f"it holds a JSON {type(saved).__name__}, not a block's object")
            if saved.get("key") != key or len(saved["scores"]) != n_scored:
                raise ValueError("its key or number of scores does not match its name")
            scores = np.array([_decode(x) for x in saved["scores"]], dtype=np.float64)
            return scores, _decode(saved["threshold"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            warnings.warn(f"Ignoring the damaged checkpoint file {path} ({exc}); its block is refitted.",
                          stacklevel=3)
            return None

    def save(self, key: str, block: tuple[int, int, int], scores: np.ndarray, threshold: float) -> Path:
        """Write the block's result atomically (:func:`finvae._atomic.write_text`)."""
        lo, s, e = block
        index = self._index
        document = {
            "key": key,
            "format": FORMAT,
            "estimator": self._common["estimator"],
            "rows": {"train": [lo, s], "scored": [s, e]},
            "dates": {"train_first": str(index[lo]), "train_last": str(index[s - 1]),
                      "scored_first": str(index[s]), "scored_last": str(index[e - 1])},
            "threshold": _encode(float(threshold)),
            "scores": [_encode(float(x)) for x in scores],
        }
        return write_text(json.dumps(document, allow_nan=False), self.path(key))


def fit_or_load(directory, estimator, X: pd.DataFrame):
    """``clone(estimator).fit(X)``, or the same model saved in ``directory`` by an earlier run.

    The model folder is ``model-<key>``, the key the SHA-256 of the estimator's class
    and parameters, ``X``'s values, dates, columns and dtypes, and the finvae version.
    It is written beside its name and then renamed into place
    (:func:`finvae._atomic.atomic_folder`), so a crash leaves the whole model or
    none; loading it runs no code (:meth:`finvae.FinVAE.load`). A folder that
    cannot be loaded is ignored with a warning, and the model refitted and saved
    over it.

    Returns
    -------
    model : fitted estimator
    reused : bool
        True when the model was loaded rather than fitted.
    """
    from sklearn.base import clone

    from finvae import __version__

    values = np.ascontiguousarray(X.to_numpy(dtype=np.float64, na_value=np.nan))
    key = _digest({
        "format": FORMAT,
        "finvae": __version__,
        "estimator": _qualified(estimator),
        "params": plain(_result_params(estimator)),
        "columns": [str(c) for c in X.columns],
        "dtypes": [str(d) for d in X.dtypes],
        "values": hashlib.sha256(values).hexdigest(),
        "dates": hashlib.sha256(pd.util.hash_pandas_object(X.index, index=False).to_numpy()).hexdigest(),
    })
    directory = writable_folder(directory)
    folder = directory / f"model-{key[:32]}"
    if folder.exists():
        try:
            return type(estimator).load(folder), True
        except Exception as exc:  # a damaged folder costs a refit, never the run
            warnings.warn(f"Ignoring the damaged checkpoint {folder} ({exc}); the model is refitted.", stacklevel=2)
    model = clone(estimator).fit(X)
    try:
        with atomic_folder(folder) as staging:
            model.save(staging)
    except OSError as exc:  # e.g. another run with the same key saving the same model at the same moment
        if not (folder / "finvae.json").is_file():
            warnings.warn(f"Could not save the model to the checkpoint {folder} ({exc}); the run goes on, and a "
                          "re-run fits it again.", stacklevel=2)
    return model, False
