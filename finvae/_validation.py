"""Checks on returns input that say what is wrong and how to fix it."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

from finvae._exceptions import DataError

# One rule for "prices, not returns", shared with the data loaders. finvae.datasets
# imports nothing from the estimator side, so this import makes no cycle.
from finvae.datasets._market import PRICE_LEVEL, check_not_price_fields, looks_like_prices


def day_label(label) -> object:
    """A date as YYYY-MM-DD for messages and summaries; a label of another index as it is."""
    return label.date() if isinstance(label, pd.Timestamp) else label


def _first(labels, limit: int = 3) -> str:
    labels = list(labels)
    shown = ", ".join(str(x.date()) if isinstance(x, pd.Timestamp) else repr(x) for x in labels[:limit])
    return shown + (f" (and {len(labels) - limit} more)" if len(labels) > limit else "")


def check_returns(X, *, window: int, what: str = "returns",
                  fitting: bool = True) -> tuple[np.ndarray, pd.Index | None, pd.Index | None]:
    """Validate returns given as a DataFrame (dates × assets) or a 2-D array (days × assets).

    Returns the values as float64 (no copy where the input already is one:
    callers must not write into them; the caller's data are never modified),
    and the index and columns (None for an array). Raises
    :class:`DataError` naming the problem: non-numeric columns, unsorted or
    duplicate dates, infinite values, fewer rows than ``window``, an asset with
    no data at all (when ``fitting``: at other times it is an asset missing on
    every date, which the coverage rule handles), or price levels passed where
    returns are expected (:func:`finvae.datasets.looks_like_prices`).
    """
    index = columns = None
    if sparse.issparse(X):
        raise DataError(
            f"{what} is a sparse matrix; sparse input is not supported (returns are dense, NaN where missing). "
            "Pass a DataFrame or a dense array, e.g. X.toarray()."
        )
    if isinstance(X, pd.Series):
        X = X.to_frame()
    if isinstance(X, pd.DataFrame):
        check_not_price_fields(X.columns, what)
        bad = [c for c, dtype in X.dtypes.items() if not (pd.api.types.is_numeric_dtype(dtype)
                                                          and not pd.api.types.is_bool_dtype(dtype)
                                                          and not pd.api.types.is_complex_dtype(dtype))]
        if bad:
            raise DataError(
                f"{what} must be numeric, but column(s) {_first(bad)} are not "
                f"(dtype {X[bad[0]].dtype}). Drop them or convert with pd.to_numeric."
            )
        index, columns = X.index, X.columns
        check_labels(X, what)
        values = X.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        values = np.asarray(X)
        if np.iscomplexobj(values):
            raise DataError(f"{what}: Complex data not supported; returns are real numbers.")
        try:
            values = values.astype(np.float64, copy=False)
        except ValueError as error:  # e.g. a string that is no number
            raise DataError(f"{what} must be numeric, but holds {values.dtype} values that are not: {error}.") from None
        except TypeError as error:  # e.g. a dict or a date in an object array
            raise TypeError(f"{what} must be numeric: {error}.") from None
        if values.ndim == 1:
            raise DataError(
                f"{what} must be 2-D (days × assets); got a 1-D array of length {len(values)}. "
                "Reshape your data: for one asset use values.reshape(-1, 1)."
            )
        if values.ndim != 2:
            raise DataError(f"{what} must be 2-D (days × assets); got shape {values.shape}.")
    labels = columns if columns is not None else pd.RangeIndex(values.shape[1])
    if values.shape[1] == 0:
        raise DataError(
            f"{what} has no columns (assets): 0 feature(s) (shape={values.shape}) while a minimum of 1 is required."
        )
    infinite = np.isinf(values)
    if infinite.any():
        day, asset = np.argwhere(infinite)[0]
        when = _first([index[day]]) if index is not None else f"row {day}"
        raise DataError(
            f"{what} holds {int(infinite.sum())} infinite value(s), the first in column {labels[asset]!r} "
            f"on {when}. Replace them with NaN (missing) or fix the prices they came from."
        )
    if len(values) < window:
        raise DataError(
            f"{what} has {len(values)} rows (n_samples={len(values)}), fewer than window={window}: "
            f"each score needs a full window of {window} days. Pass at least {window} rows or a smaller window."
        )
    empty = np.isnan(values).all(axis=0)
    if fitting and empty.any():
        raise DataError(f"{what} column(s) {_first(labels[empty])} hold no data (all NaN). Drop them.")
    if looks_like_prices(values):
        raise DataError(_levels_message(values, what))
    return values, index, columns



def check_labels(frame: pd.DataFrame, what: str = "returns", *, sorted_dates: bool = True) -> None:
    """Check a DataFrame's labels: unique columns, and dates that are present, unique and (by default) sorted.

    Raises :class:`DataError` naming the problem and how to fix it. Dates held as text that are out of
    order get their own message: sorting text would scramble the history ('1/12/2015' < '1/9/2015').
    """
    index, columns = frame.index, frame.columns
    if columns.has_duplicates:
        raise DataError(
            f"{what} has duplicate column names: {_first(columns[columns.duplicated()].unique())}. "
            "Give each asset one column, e.g. returns.loc[:, ~returns.columns.duplicated()]."
        )
    if index.hasnans:
        raise DataError(
            f"{what} has {int(index.isna().sum())} missing date(s) (NaT) in its index, the first at row "
            f"{int(np.flatnonzero(index.isna())[0])}. Drop those rows, e.g. returns[returns.index.notna()]."
        )
    if index.has_duplicates:
        raise DataError(
            f"{what} has duplicate dates: {_first(index[index.duplicated()].unique())}. "
            "Keep one row per date, e.g. returns[~returns.index.duplicated()]."
        )
    if sorted_dates and not index.is_monotonic_increasing:
        position = int(np.flatnonzero(index[1:] < index[:-1])[0]) + 1
        if pd.api.types.infer_dtype(index, skipna=True) == "string":
            # Text is compared as text ('1/12/2015' < '1/9/2015'): sorting it would scramble the history.
            raise DataError(
                f"{what} dates are text, compared as text: {index[position]!r} comes before "
                f"{index[position - 1]!r}. Parse them as dates first: returns.index = "
                "pd.to_datetime(returns.index), or pd.read_csv(..., index_col=0, parse_dates=True)."
            )
        raise DataError(
            f"{what} dates are not sorted: {_first([index[position]])} comes after "
            f"{_first([index[position - 1]])}. Sort them with returns.sort_index()."
        )

def _levels_message(values: np.ndarray, what: str) -> str:
    finite = values[np.isfinite(values)]
    share = min(100 * np.mean(finite > 0), 99.99)  # 99.9994 % is not "100.00 %"
    positive = f"{share:.2f} % of the values" if (finite <= 0).any() else "every value"
    return (f"{what} look like price levels, not returns: {positive} positive, median {np.median(finite):.3g}. "
            "Convert prices first, e.g. finvae.datasets.prices_to_returns(prices).")


def check_not_levels(values, what: str = "returns") -> None:
    """DataError when ``values`` are levels (prices, gross returns ``1 + r``) passed as returns.

    The level clause of :func:`finvae.datasets.looks_like_prices` only (nearly all positive, with a median
    above ``PRICE_LEVEL``): hand-made returns such as 1 % every day are steady, yet are returns. For the
    tools that compound returns (backtests, indexes, factor fits), where levels give inf and nonsense.
    """
    values = np.asarray(values, dtype=np.float64)
    if looks_like_prices(values) and np.nanmedian(np.abs(values)) > PRICE_LEVEL:
        raise DataError(_levels_message(values, what))


def as_date_of(index: pd.DatetimeIndex, date, name: str = "date") -> pd.Timestamp:
    """``date`` as a Timestamp comparable with ``index``: read in the index's time zone when it names none.

    A DataError (naming ``name``) for a date that is not one, or that has a time zone when the index has none.
    """
    try:
        stamp = pd.Timestamp(date)
    except (ValueError, TypeError):
        raise DataError(f"{name}={date!r} is not a date; pass one such as 2024-01-31.") from None
    if index.tz is not None and stamp.tz is None:
        return stamp.tz_localize(index.tz)
    if index.tz is None and stamp.tz is not None:
        raise DataError(f"{name}={date!r} has a time zone, but the returns' dates have none; pass a plain date.")
    return stamp
