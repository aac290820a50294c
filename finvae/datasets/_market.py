"""Market data: the bundled S&P 500 sample, cached yfinance downloads, prices to returns.

Everything here ends in a DataFrame of dates × assets. Prices come from
:func:`load_sp500_sample` (offline, shipped in the package) or
:func:`download_prices` (Yahoo Finance through ``yfinance``, cached on disk);
:func:`prices_to_returns` turns them into returns, and :func:`load_returns`
reads a CSV or parquet file of either and hands back returns.

Problems in the data raise :class:`finvae.DataError` with a message that names
the first offending rows or tickers and says what to do; things that are
suspicious but usable (a ticker missing from a download, stale quotes) warn.
"""

from __future__ import annotations

import logging
import os
import re
import time
import urllib.parse
import warnings
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import IO, Literal

import numpy as np
import pandas as pd
import platformdirs
from tqdm.auto import tqdm

from finvae._exceptions import DataError

__all__ = [
    "CACHE_ENV_VAR",
    "download_prices",
    "load_returns",
    "load_sp500_sample",
    "looks_like_prices",
    "prices_to_returns",
]

#: Environment variable that moves finvae's download cache (``cache_dir=`` wins over it).
CACHE_ENV_VAR = "FINVAE_CACHE_DIR"

#: A median absolute value above this is a price level: no return series has a typical move of 50 %.
PRICE_LEVEL = 0.5
#: Prices are persistent: from one row to the next they move a few percent at the median.
#: Consecutive returns are unrelated numbers, so their median relative step is of order 1.
PRICE_STEP = 0.1

#: Intervals that Yahoo Finance serves (``yfinance.download`` docstring).
_INTERVALS = ("1m", "2m", "5m", "15m", "30m", "60m", "90m", "1h", "1d", "5d", "1wk", "1mo", "3mo")

# Rate limiting: retry this many times, sleeping _BACKOFF_SECONDS * 2**attempt (2, 4, 8, 16 s).
# _sleep is looked up at call time so that tests can replace it and run instantly.
_RATE_LIMIT_RETRIES = 4
_BACKOFF_SECONDS = 2.0
_sleep = time.sleep

# yfinance.download logs per-ticker failures instead of raising; these log texts mean
# "rate limited" or "no network", which download_prices must tell apart from a bad ticker.
_RATE_LIMIT_PATTERN = re.compile(r"YFRateLimitError|Too Many Requests|rate.?limit", re.IGNORECASE)
_NETWORK_PATTERN = re.compile(
    r"DNSError|Could not resolve|Failed to connect|Connection (?:refused|reset|aborted)|ConnectionError"
    r"|Network is unreachable|timed? ?out|curl: \((?:5|6|7|28|35|56)\)",
    re.IGNORECASE,
)
# download_prices reads yfinance's reason for an empty answer from this attribute of the frame.
_REASON_ATTR = "finvae_yfinance_errors"

_SAMPLE_HINT = "finvae.datasets.load_sp500_sample() (20 S&P 500 stocks, 1990-2022, no network needed)"


# --------------------------------------------------------------------------- formatting


def _label(value) -> str:
    """A date as 2020-01-02 (with the time only if it has one), anything else as repr."""
    if isinstance(value, pd.Timestamp):
        return str(value.date()) if value == value.normalize() else str(value)
    return repr(value)


def _first(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


# --------------------------------------------------------------------------- the bundled sample


def load_sp500_sample() -> pd.DataFrame:
    """Daily adjusted close prices of 20 S&P 500 stocks, 1990-01-02 to 2022-12-28, offline.

    The file ships inside the package (Yahoo Finance adjusted closes as
    distributed by ``skfolio``, BSD-3-Clause; provenance in ``data/README.md``),
    so this works on a fresh install without a network. Each call reads it
    anew: the caller may modify the result freely.

    Returns
    -------
    prices : DataFrame of shape (8313, 20)
        ``float64`` prices, a ``DatetimeIndex`` named ``"Date"`` (trading days,
        sorted) and the tickers AAPL, AMD, BAC, BBY, CVX, GE, HD, JNJ, JPM, KO,
        LLY, MRK, MSFT, PEP, PFE, PG, RRC, UNH, WMT, XOM as columns. There are
        no missing values. RRC's early prices stay unchanged for long
        stretches (stale quotes), which :func:`prices_to_returns` reports.

    Examples
    --------
    >>> from finvae.datasets import load_sp500_sample
    >>> prices = load_sp500_sample()
    >>> prices.shape
    (8313, 20)
    >>> str(prices.index[0].date()), str(prices.index[-1].date())
    ('1990-01-02', '2022-12-28')
    """
    source = resources.files("finvae.datasets").joinpath("data").joinpath("sp500_dataset.csv.gz")
    # Open through importlib.resources, not a path: this also works from a zipped install.
    with source.open("rb") as handle:
        prices = pd.read_csv(handle, compression="gzip", index_col="Date", parse_dates=True)
    return prices.astype(np.float64)


# --------------------------------------------------------------------------- validation shared by prices and returns


#: Column names of one asset's price fields (yfinance, pandas-datareader, spreadsheets), lower case, and the
#: columns that yfinance's Ticker.history() adds beside them.
_PRICE_FIELDS = frozenset({"open", "high", "low", "close", "adj close", "volume"})
_FIELD_EXTRAS = frozenset({"dividends", "stock splits", "capital gains", "repaired?"})


def check_not_price_fields(columns: pd.Index, what: str) -> None:
    """DataError when ``columns`` are price fields (Open, High, Low, Close, Volume), not one column per asset.

    A ``yfinance.download`` frame has (field, ticker) columns, Volume included; an OHLCV file has one column
    per field. Either, read as one asset per column, would fit a model on volumes and highs. Only a level whose
    every label is a price field (at least three of them) counts: "Low" and "High" portfolios, or Lowe's
    ticker LOW, are assets.
    """
    levels = [columns.get_level_values(i) for i in range(columns.nlevels)] if columns.nlevels > 1 else [columns]
    for level in levels:
        names = {str(name).strip().lower() for name in level}
        fields = names & _PRICE_FIELDS
        if names <= _PRICE_FIELDS | _FIELD_EXTRAS and (len(fields) >= 3 or (len(fields) == 2 and "volume" in fields)):
            wanted = next((f for f in ("adj close", "close", "open") if f in names), sorted(fields)[0])
            field = next(str(name) for name in level if str(name).strip().lower() == wanted)
            keep = (f"prices.xs({field!r}, axis=1, level={level.name!r})" if columns.nlevels > 1 and level.name
                    else f"prices[{field!r}]" if columns.nlevels > 1 else f"prices[[{field!r}]]")
            raise DataError(
                f"{what} has columns of price fields ({', '.join(sorted(fields))}), not one column per asset: "
                f"volumes and highs would be read as assets. Keep one price per asset, e.g. {keep}."
            )


def _numeric_frame(data, what: str) -> pd.DataFrame:
    """A float64 copy of ``data`` after the checks common to prices and returns.

    Raises DataError for non-numeric or duplicate columns, duplicate or unsorted
    dates, and infinite values, naming the first offenders. The caller's object
    is never modified.
    """
    if isinstance(data, pd.Series):
        data = data.to_frame()
    if not isinstance(data, pd.DataFrame):
        raise TypeError(
            f"{what} must be a pandas DataFrame (dates × assets) or Series; got {type(data).__name__}. "
            "Wrap an array with pd.DataFrame(values, index=dates, columns=tickers)."
        )
    check_not_price_fields(data.columns, what)
    bad = [c for c, dtype in data.dtypes.items()
           if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)]
    if bad:
        column = data[bad[0]]
        text = pd.to_numeric(column, errors="coerce").isna() & column.notna()
        cell = (f"; e.g. {column[text].iloc[0]!r} on {_label(column.index[text.to_numpy()][0])}, "
                f"{int(text.sum())} such cell(s) in {bad[0]!r}") if text.any() else ""
        raise DataError(
            f"{what} must be numeric, but column(s) {_first([repr(c) for c in bad])} are not "
            f"(dtype {column.dtype}{cell}). A column of text (a currency, a name) is not an asset: drop it. "
            "Stray text in a column of numbers (a '-' for a missing value) is a gap: convert with "
            "pd.to_numeric(..., errors='coerce') to turn it into NaN."
        )
    if data.columns.has_duplicates:
        twice = data.columns[data.columns.duplicated()].unique()
        raise DataError(f"{what} has duplicate columns: {_first([repr(c) for c in twice])}. Keep one of each.")
    index = data.index
    if index.has_duplicates:
        twice = index[index.duplicated()].unique()
        raise DataError(
            f"{what} has duplicate dates: {_first([_label(d) for d in twice])}. Keep one row per date, "
            "e.g. data[~data.index.duplicated(keep='last')]."
        )
    if len(index) > 1 and not index.is_monotonic_increasing:
        row = int(np.flatnonzero(np.asarray(index[1:] < index[:-1]))[0]) + 1
        if pd.api.types.infer_dtype(index, skipna=True) == "string":
            # Text is compared as text ('1/12/2015' < '1/9/2015'): sorting it would scramble the history.
            raise DataError(
                f"{what} dates are text, compared as text: row {row} ({index[row]!r}) comes before row {row - 1} "
                f"({index[row - 1]!r}). Parse them as dates first: data.index = pd.to_datetime(data.index), "
                "or pd.read_csv(..., index_col=0, parse_dates=True)."
            )
        raise DataError(
            f"{what} dates are not sorted: row {row} ({_label(index[row])}) comes after "
            f"row {row - 1} ({_label(index[row - 1])}). Sort them with data.sort_index()."
        )
    frame = data.astype(np.float64)  # astype copies: the caller's frame stays as it was
    values = frame.to_numpy()
    infinite = np.isinf(values)
    if infinite.any():
        cells = [f"{frame.columns[j]} on {_label(index[i])}" for i, j in np.argwhere(infinite)]
        raise DataError(
            f"{what} holds {len(cells)} infinite value(s): {_first(cells)}. Replace them with NaN "
            "(missing) or fix the source they came from."
        )
    return frame


# --------------------------------------------------------------------------- prices to returns


def prices_to_returns(
    prices: pd.DataFrame | pd.Series,
    kind: Literal["log", "simple"] = "log",
    *,
    stale_days: int | None = 10,
) -> pd.DataFrame | pd.Series:
    r"""Turn prices into returns, one row per date, keeping missing prices missing.

    The return of an asset on date :math:`t` is :math:`\log(P_t / P_s)`
    (``kind="log"``) or :math:`P_t / P_s - 1` (``kind="simple"``), where
    :math:`s` is the latest earlier date on which that asset has a price.

    NaN prices are never filled with invented values:

    - **Late listing** (leading NaNs): returns stay NaN until the asset's
      second price; its first trading day has no earlier price, so its return
      is NaN too. Never zero.
    - **Gaps** (a holiday in one market, a trading halt, a missing quote):
      the return on the missing date is NaN, and the next return is measured
      from the last price before the gap, so the move over the gap is kept
      whole and no zero return is made up.
    - **Delisting** (trailing NaNs): returns stay NaN after the last price.

    The first date has no earlier price for any asset and is dropped.

    Parameters
    ----------
    prices : DataFrame of shape (n_dates, n_assets) or Series
        Prices (adjusted closes), one row per date in increasing order, NaN
        where there is no price. Not modified.
    kind : {"log", "simple"}, default="log"
        Logarithmic or simple (arithmetic) returns.
    stale_days : int or None, default=10
        Warn when an asset's price stays exactly unchanged for this many
        consecutive priced days or more (a stale quote rather than a market
        price). ``None`` turns the check off.

    Returns
    -------
    returns : DataFrame of shape (n_dates - 1, n_assets), or Series
        ``float64`` returns with the columns of ``prices`` and its index
        without the first date.

    Raises
    ------
    DataError
        If a column is not numeric, dates are duplicated or not sorted, a
        price is infinite, zero or negative (the message names the first
        offending dates and assets), or there are fewer than 2 dates.
    TypeError
        If ``prices`` is not a DataFrame or Series.

    Warns
    -----
    UserWarning
        If an asset has a run of at least ``stale_days`` unchanged prices; the
        message names the asset, the run's first and last dates and its length.

    Examples
    --------
    >>> import pandas as pd
    >>> from finvae.datasets import prices_to_returns
    >>> prices = pd.DataFrame({"A": [100.0, 110.0, None, 121.0], "B": [None, 50.0, 55.0, 55.0]},
    ...                       index=pd.date_range("2024-01-01", periods=4))
    >>> prices_to_returns(prices, kind="simple").round(3)
                  A    B
    2024-01-02  0.1  NaN
    2024-01-03  NaN  0.1
    2024-01-04  0.1  0.0
    """
    if kind not in ("log", "simple"):
        raise ValueError(f"kind must be 'log' or 'simple', got {kind!r}.")
    if stale_days is not None and (not isinstance(stale_days, (int, np.integer)) or stale_days < 1):
        raise ValueError(f"stale_days must be a positive integer or None, got {stale_days!r}.")
    frame = _numeric_frame(prices, "prices")
    if len(frame) < 2:
        raise DataError(f"prices has {len(frame)} row(s); returns need at least 2 dates.")
    values = frame.to_numpy()
    non_positive = values <= 0  # NaN compares False: missing prices are fine here
    if non_positive.any():
        cells = [f"{frame.columns[j]} on {_label(frame.index[i])} ({values[i, j]:g})"
                 for i, j in np.argwhere(non_positive)]
        raise DataError(
            f"prices must be positive, but {len(cells)} value(s) are zero or negative: {_first(cells)}. "
            "A zero usually marks a missing quote: replace such values with NaN, e.g. prices.mask(prices <= 0), "
            "and they are treated as gaps. If these are returns, not prices, use them directly."
        )
    if stale_days is not None:
        _warn_stale(frame, stale_days)
        _warn_unchanged_rows(frame)

    # Denominator: each asset's last price strictly before the date. Forward filling only the
    # denominator (never the numerator) keeps gaps and pre-listing/post-delisting dates NaN.
    previous = frame.ffill().shift(1).to_numpy()
    ratio = values / previous
    returns = np.log(ratio) if kind == "log" else ratio - 1.0
    result = pd.DataFrame(returns, index=frame.index, columns=frame.columns).iloc[1:]
    if isinstance(prices, pd.Series):
        return result.iloc[:, 0].rename(prices.name)
    return result


def _stale_runs(series: pd.Series, min_days: int) -> list[tuple[pd.Timestamp, pd.Timestamp, int]]:
    """Runs of at least ``min_days`` unchanged prices: (first date, last date, days unchanged)."""
    observed = series.dropna()
    same = observed.to_numpy()[1:] == observed.to_numpy()[:-1]
    # Starts and ends of the runs of True in `same`, found from the edges of the padded 0/1 signal.
    edges = np.diff(np.concatenate(([0], same.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(observed.index[a], observed.index[b], int(b - a))
            for a, b in zip(starts, ends, strict=True) if b - a >= min_days]


def _warn_stale(frame: pd.DataFrame, min_days: int) -> None:
    found = []
    for column in frame.columns:
        runs = _stale_runs(frame[column], min_days)
        if runs:
            first, last, days = max(runs, key=lambda run: run[2])
            more = f", {len(runs) - 1} more such run(s)" if len(runs) > 1 else ""
            found.append(f"{column} unchanged for {days} days from {_label(first)} to {_label(last)}{more}")
    if found:
        warnings.warn(
            f"Stale prices (unchanged for {min_days} or more days in a row, likely stale quotes rather than "
            f"market prices): {_first(found, limit=5)}. Their returns are zero on those days; check the "
            "source, or pass stale_days=None to turn this check off.",
            UserWarning,
            stacklevel=3,
        )


def _warn_unchanged_rows(frame: pd.DataFrame) -> None:
    """Warn about dates on which every priced asset (3 or more) is unchanged: forward-filled non-trading days.

    Non-trading days filled in with the day before's prices (weekends in a file of calendar days, holidays in
    one of business days) are about 30 % and 4 % of the dates, and their zero returns would count as calm days.
    Real quotes coincide now and then (three 1990s stocks quoted in eighths of a dollar: up to 0.2 % of the
    dates of the bundled sample, 0.8 % of a few years of it), so the warning starts at 2 % of the dates.
    """
    values = frame.to_numpy()
    previous = frame.ffill().shift(1).to_numpy()
    priced = ~np.isnan(values) & ~np.isnan(previous)
    unchanged = (priced.sum(axis=1) >= 3) & np.all(~priced | (values == previous), axis=1)
    if unchanged.sum() >= max(2, 0.02 * len(frame)):
        dates = frame.index[unchanged]
        weekends = int(np.isin(getattr(dates, "day_of_week", np.array([])), (5, 6)).sum())
        why = f", {weekends} of them weekend days" if weekends else ""
        warnings.warn(
            f"{int(unchanged.sum())} date(s) on which every asset's price is unchanged (e.g. {_label(dates[0])}"
            f"{why}): non-trading days filled in with the day before's prices? Their returns are all zero and count "
            "as calm trading days. Drop those rows, or leave their prices empty (rows with no price are dropped).",
            UserWarning,
            stacklevel=3,
        )


# --------------------------------------------------------------------------- prices or returns?


def looks_like_prices(data: pd.DataFrame | pd.Series | np.ndarray) -> bool:
    """Whether numbers look like price levels rather than returns.

    The rule, on the finite values of the numeric columns:

    1. At least 99 % of the values are positive (prices always are, but for a
       placeholder such as -1 here and there; any real return series of some
       length has negative days on nearly half of them). Otherwise: returns.
    2. And either the median absolute value exceeds ``PRICE_LEVEL = 0.5``
       (no return series has a typical move of 50 %), or the median relative
       step between consecutive rows of a column, ``|x_t / x_{t-1} - 1|``, is
       below ``PRICE_STEP = 0.1`` (prices are persistent and move a few percent
       a day; consecutive returns are unrelated numbers, so their relative step
       is of order 1). The second clause catches low-priced assets such as
       penny stocks or FX rates like JPY/USD.

    Fewer than two finite values give ``False``. Gross returns (``1 + r``)
    look like prices by this rule.

    Parameters
    ----------
    data : DataFrame, Series or array of shape (n_dates,) or (n_dates, n_assets)
        The numbers to judge, rows in date order. Non-numeric columns of a
        DataFrame are ignored. Not modified.

    Returns
    -------
    bool
        ``True`` if ``data`` looks like prices.

    Examples
    --------
    >>> from finvae.datasets import load_sp500_sample, looks_like_prices, prices_to_returns
    >>> prices = load_sp500_sample()
    >>> looks_like_prices(prices), looks_like_prices(prices_to_returns(prices, stale_days=None))
    (True, False)
    """
    if isinstance(data, pd.Series):
        data = data.to_frame()
    if isinstance(data, pd.DataFrame):
        numeric = [c for c, dtype in data.dtypes.items()
                   if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)]
        values = data[numeric].to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        values = np.asarray(data, dtype=np.float64)
    if values.ndim == 1:
        values = values.reshape(-1, 1)
    finite = values[np.isfinite(values)]
    if finite.size < 2 or np.mean(finite <= 0) > 0.01:  # a placeholder such as -1 here and there is no return
        return False
    if np.median(finite) > PRICE_LEVEL:
        return True
    with np.errstate(divide="ignore", invalid="ignore"):
        steps = np.abs(values[1:] / values[:-1] - 1.0)
    steps = steps[np.isfinite(steps)]
    return bool(steps.size and np.median(steps) < PRICE_STEP)


# --------------------------------------------------------------------------- reading a file


def load_returns(
    path_or_buffer: str | os.PathLike | IO,
    *,
    assume: Literal["auto", "prices", "returns"] = "auto",
    kind: Literal["log", "simple"] = "log",
) -> pd.DataFrame:
    """Read a CSV or parquet file of prices or returns and return returns.

    The file holds one row per date and one column per asset. The dates are
    the index of a parquet file written from a DataFrame with a
    ``DatetimeIndex``, or else a column named ``Date``, ``Datetime``,
    ``Timestamp`` or ``Time`` (any case), or else the first column. Which
    the file holds, prices or returns, is decided by :func:`looks_like_prices`
    unless ``assume`` says it; a guess is reported by a warning.

    Prices go through :func:`prices_to_returns` (missing prices stay missing,
    see there); returns are used as they are (NaN stays NaN).

    Spreadsheet exports read as they are: ``;``-separated files (with decimal
    commas where the cells have them), quoted thousands separators
    (``"14,680.00"``), and a trailing separator on every line (its empty
    column is dropped). Dates that carry two UTC offsets (a zone with summer
    time) are read as local dates; ``dd/mm/yyyy`` dates are told from
    ``mm/dd/yyyy`` by which reading moves by days from row to row. Dates on
    which no asset has a value (weekends, holidays) are dropped, so that a
    window counts trading days.

    Parameters
    ----------
    path_or_buffer : str, path or file-like
        A ``.csv`` (optionally compressed, e.g. ``.csv.gz``) or ``.parquet`` /
        ``.pq`` file, or an open file. An open binary file starting with the
        parquet magic bytes is read as parquet, anything else as CSV.
    assume : {"auto", "prices", "returns"}, default="auto"
        What the file holds. ``"auto"`` decides with :func:`looks_like_prices`
        and warns which it assumed; naming it skips the guess and the warning.
    kind : {"log", "simple"}, default="log"
        The returns computed from prices. Ignored for a file of returns.

    Returns
    -------
    returns : DataFrame of shape (n_dates, n_assets)
        ``float64`` returns with a ``DatetimeIndex`` (for prices, without the
        first date, which has no return).

    Raises
    ------
    DataError
        If the file cannot be parsed, has no column of dates or unparseable
        dates, non-numeric columns, duplicate or unsorted dates, infinite
        values, or (for prices) non-positive prices; for returns that look
        like percentages (a typical move of 10 % a day or more); if a parquet
        file needs ``pyarrow``, which is not installed.

    Warns
    -----
    UserWarning
        With ``assume="auto"``, saying whether prices or returns were assumed
        and why. Also the stale-price warning of :func:`prices_to_returns`;
        when dates were read day first, or in their local time from two UTC
        offsets; when empty dates were dropped; and when every asset's price
        is unchanged on many dates (non-trading days filled in).

    Examples
    --------
    >>> from finvae.datasets import load_returns, load_sp500_sample
    >>> load_sp500_sample().to_csv("prices.csv")                 # doctest: +SKIP
    >>> returns = load_returns("prices.csv", assume="prices")    # doctest: +SKIP
    """
    if assume not in ("auto", "prices", "returns"):
        raise ValueError(f"assume must be 'auto', 'prices' or 'returns', got {assume!r}.")
    if kind not in ("log", "simple"):
        raise ValueError(f"kind must be 'log' or 'simple', got {kind!r}.")
    source = _describe(path_or_buffer)
    frame = _set_date_index(_read_table(path_or_buffer, source), source)
    frame = _numeric_frame(frame, source)
    empty = frame.isna().all(axis=1)
    if empty.any() and not empty.all():  # weekends and holidays in a file of calendar days
        warnings.warn(f"load_returns: {source} has {int(empty.sum())} date(s) without a value for any asset (e.g. "
                      f"{_label(frame.index[empty][0])}: weekends or holidays?); they are dropped, so that a window "
                      "counts trading days.", UserWarning, stacklevel=2)
        frame = frame.loc[~empty]
    holds = assume
    if assume == "auto":
        holds = "prices" if looks_like_prices(frame) else "returns"
        finite = frame.to_numpy()[np.isfinite(frame.to_numpy())]
        share = min(100 * np.mean(finite > 0), 99.99)  # 99.9994 % is not "100.00 %"
        positive = f"{share:.2f} % of the values are" if (finite <= 0).any() else "every value is"
        why = (f"{positive} positive, median {np.median(finite):.3g}" if holds == "prices"
               else f"median absolute value {np.median(np.abs(finite)) if finite.size else float('nan'):.3g}"
               + (", with negative values" if (finite < 0).any() else ""))
        action = (f"converted them to {kind} returns with prices_to_returns" if holds == "prices"
                  else "used them as they are, as daily log returns (simple returns, 1 % = 0.01, would be read "
                       "a little wrong: pass np.log1p of them, or prices; on the command line, --assume returns "
                       "--returns-kind simple)")
        said = (f"load_returns: {source} looks like {holds} ({why}); {action}. Pass assume='{holds}' to say so "
                f"and silence this, or assume='{'returns' if holds == 'prices' else 'prices'}' if that is wrong.")
        if holds == "returns":
            warnings.warn(said, UserWarning, stacklevel=2)
    if holds == "prices":
        returns = prices_to_returns(frame, kind=kind)  # its errors first: "converted" only once it is so
        if assume == "auto":
            warnings.warn(said, UserWarning, stacklevel=2)
        return returns
    finite = np.abs(frame.to_numpy()[np.isfinite(frame.to_numpy())])
    if finite.size and np.median(finite) >= 0.1 and not looks_like_prices(frame):
        # A typical day of 10 % or more: no asset moves like that. An error, not a warning: read on, these give a
        # backtest of inf % and flag most days. Either prices with zeros among them (a dead asset quoted at 0),
        # which move a few percent a day, or returns in percent.
        step = median_step(frame)
        if step < PRICE_STEP:
            values = frame.to_numpy()
            cells = [f"{frame.columns[j]} on {_label(frame.index[i])} ({values[i, j]:g})"
                     for i, j in np.argwhere(values <= 0)]
            raise DataError(
                f"{source} looks like prices (its values move {step:.1%} a day), not returns, but {len(cells)} of "
                f"them are zero or negative: {_first(cells)}. A zero usually marks a missing quote: replace such "
                "values with NaN, e.g. prices.mask(prices <= 0), and pass assume='prices'.")
        raise DataError(f"{source} holds returns with a median absolute value of {np.median(finite):.3g}, a typical "
                        "move of 10 % a day or more: are they in percent? Divide them by 100 (finvae reads 0.01 as "
                        "1 %). If they really move that much, read the file with pandas and pass the frame on.")
    return frame


def median_step(frame: pd.DataFrame) -> float:
    """The median relative step between consecutive positive values (NaN without any): below ``PRICE_STEP``,
    numbers move like price levels, whatever zeros or negatives are among them."""
    values = frame.to_numpy(dtype=np.float64)
    positive = np.where(values > 0, values, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        steps = np.abs(positive[1:] / positive[:-1] - 1.0)
    steps = steps[np.isfinite(steps)]
    return float(np.median(steps)) if steps.size else np.nan


def _describe(path_or_buffer) -> str:
    if isinstance(path_or_buffer, (str, os.PathLike)):
        return f"'{os.fspath(path_or_buffer)}'"
    return f"'{getattr(path_or_buffer, 'name', None)}'" if hasattr(path_or_buffer, "name") else "the buffer"


def _is_parquet(path_or_buffer) -> bool:
    if isinstance(path_or_buffer, (str, os.PathLike)):
        return Path(path_or_buffer).suffix.lower() in (".parquet", ".pq")
    if hasattr(path_or_buffer, "seek") and hasattr(path_or_buffer, "tell"):
        position = path_or_buffer.tell()
        head = path_or_buffer.read(4)
        path_or_buffer.seek(position)
        return head == b"PAR1"  # parquet's magic bytes; a text buffer reads a str and never matches
    return False


def _read_table(path_or_buffer, source: str) -> pd.DataFrame:
    if _is_parquet(path_or_buffer):
        try:
            return pd.read_parquet(path_or_buffer)
        except ImportError as exc:
            raise DataError(
                f"Reading the parquet file {source} needs pyarrow (or fastparquet), which is not installed. "
                "Install it with `pip install pyarrow`, or save the data as CSV."
            ) from exc
    seekable = hasattr(path_or_buffer, "seek") and hasattr(path_or_buffer, "tell")
    start = path_or_buffer.tell() if seekable else None
    options: dict = {}
    try:
        # A spreadsheet's export in a decimal-comma locale: "Date;AAPL;MSFT" with "1,5" in the cells. The
        # separator is read off the header line alone: parsing the body with commas first fails on a row with
        # more commas than the first (a late listing's empty cells, a gap). A stream that cannot go back to its
        # start is read once, as it comes.
        rereadable = start is not None or not seekable

        def read(**more) -> pd.DataFrame:  # the whole file again, from its start, with what it has shown
            if seekable:
                path_or_buffer.seek(start)
            return pd.read_csv(path_or_buffer, **options, **more)

        frame = pd.read_csv(path_or_buffer, nrows=0 if rereadable else None)
        header = str(frame.columns[0]) if len(frame.columns) == 1 else ""
        if ";" in header or "\t" in header:
            options["sep"] = ";" if ";" in header else "\t"
        if rereadable:
            frame = read()
        if _text_columns_match(frame, r"-?\d{1,3}(,\d{3})+(\.\d+)?"):
            options["thousands"] = ","
            if rereadable:
                frame = read()
        if rereadable and options.get("sep") and _any_cell_matches(frame, r"-?\d+,\d+"):
            frame = read(decimal=",")
        if rereadable and options.get("sep") and _any_cell_matches(frame, r"-?\d{1,3}(\.\d{3})+,\d+"):
            # "1.439,10": points between thousands, a comma before the decimals. Read every cell as text and
            # convert those written so: not read_csv(thousands="."), which would read the dates' points too
            # (02.01.1990 as a number), nor its own numbers (1.000 as 1.0). Other text stays text, to be named.
            frame = read(dtype=str)
            for column in frame.columns:
                text = frame[column].str.strip()
                european = text.str.fullmatch(_EUROPEAN).fillna(False).astype(bool)
                if european.any() or text.notna().sum() == 0:  # an empty column: NaN, as in any file
                    plain = text[european].str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
                    converted = frame[column].astype(object)
                    converted[european] = pd.to_numeric(plain).astype(np.float64)
                    frame[column] = pd.to_numeric(converted) if european.sum() == text.notna().sum() else converted
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        message = " ".join(str(exc).split())  # pandas' message ends in a newline: one line, as promised
        raise DataError(f"Could not read {source} as CSV: {message}. Pass a CSV or parquet file of dates × "
                        "assets.") from exc
    # A trailing separator on every line makes an empty, unnamed column: not an asset.
    empty = [c for c in frame.columns if str(c).startswith("Unnamed: ") and frame[c].isna().all()]
    return frame.drop(columns=empty)


#: A number written with points between thousands and a comma before the decimals ("1.439,10").
_EUROPEAN = r"-?\d{1,3}(\.\d{3})*(,\d+)?|-?\d+(,\d+)?"


def _text_columns_match(frame: pd.DataFrame, pattern: str) -> bool:
    """Whether some text column (not the first: the dates) holds only values that fully match ``pattern``."""
    for column in frame.columns[1:]:
        values = frame[column].dropna()
        if values.size and (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
            if values.astype(str).str.strip().str.fullmatch(pattern).all():
                return True
    return False


def _any_cell_matches(frame: pd.DataFrame, pattern: str) -> bool:
    """Whether some cell of a text column fully matches ``pattern``."""
    for column in frame.columns:
        values = frame[column].dropna()
        if values.size and (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
            if values.astype(str).str.strip().str.fullmatch(pattern).any():
                return True
    return False


_DATE_NAMES = ("date", "datetime", "timestamp", "time")


def _parse_dates(raw: pd.Series, source: str, column) -> pd.Series:
    """The dates of ``raw`` (NaT where a value is no date), with two readings pandas gets wrong made right.

    - Offsets that change within the column (a time zone with summer time, ``-04:00`` then ``-05:00``): each
      date is read in its own offset and kept as its local date and time, with a warning.
    - ``dd/mm/yyyy`` against ``mm/dd/yyyy``: where both readings are valid, the one whose consecutive rows are
      closer in time (daily data move by days, not by months) is taken; a day-first reading is reported.
    """
    if pd.api.types.is_datetime64_any_dtype(raw):
        return raw
    text = raw.astype("string").str.strip()
    try:
        dates = pd.Series(pd.to_datetime(raw, errors="coerce"), index=raw.index)
    except (ValueError, TypeError):  # pandas refuses a column of several UTC offsets
        stamps = [pd.to_datetime(value, errors="coerce") if isinstance(value, str) else pd.NaT for value in raw]
        dates = pd.Series([s.tz_localize(None) if not pd.isna(s) and s.tzinfo else s for s in stamps],
                          index=raw.index, dtype="datetime64[ns]")
        warnings.warn(f"{source}: the dates in column {column!r} carry more than one UTC offset (a time zone with "
                      "summer time); each is read as its local date and time, without the zone.", UserWarning,
                      stacklevel=4)
        return dates
    if isinstance(dates.dtype, pd.DatetimeTZDtype):  # one UTC offset (to_csv of a UTC index): its local dates
        return dates.dt.tz_localize(None)
    separator = text.str.extract(r"^\d{1,2}([/.-])\d{1,2}[/.-]\d{4}$")[0]
    if len(text) > 1 and separator.notna().all() and separator.nunique() == 1:  # dd?mm?yyyy or mm?dd?yyyy
        sep = separator.iloc[0]
        month_first = pd.to_datetime(text, format=f"%m{sep}%d{sep}%Y", errors="coerce")
        day_first = pd.to_datetime(text, format=f"%d{sep}%m{sep}%Y", errors="coerce")
        if month_first.notna().all() and day_first.notna().all():
            def typical_step(d: pd.Series) -> float:
                return float(np.median(np.abs(np.diff(d.to_numpy()).astype("timedelta64[s]").astype(float))))
            if typical_step(day_first) < typical_step(month_first):
                warnings.warn(f"{source}: the dates in column {column!r} (such as {raw.iloc[0]!r}) are read day "
                              "first (dd/mm/yyyy): the reading in which consecutive rows are days apart, not "
                              "months. Write dates as YYYY-MM-DD to leave no doubt.", UserWarning, stacklevel=4)
                return pd.Series(day_first, index=raw.index)
            return pd.Series(month_first, index=raw.index)
        if day_first.notna().all():
            return pd.Series(day_first, index=raw.index)
    return dates


def _set_date_index(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Put the dates in the index: the existing DatetimeIndex, a date-named column, or the first column."""
    if isinstance(frame.index, pd.DatetimeIndex):
        return frame
    named = [c for c in frame.columns if str(c).strip().lower() in _DATE_NAMES]
    column = named[0] if named else (frame.columns[0] if len(frame.columns) else None)
    if column is not None and pd.api.types.is_numeric_dtype(frame[column]) and frame[column].notna().any() \
            and not pd.api.types.is_bool_dtype(frame[column]):
        numbers = frame[column]
        given = numbers.dropna()
        if given.between(18000101, 21001231).all() and (given % 1 == 0).all():  # YYYYMMDD (CRSP, SQL exports)
            if numbers.isna().any():
                rows = [f"row {i}" for i in np.flatnonzero(numbers.isna().to_numpy())]
                raise DataError(f"{source}: column {column!r} has missing dates: {_first(rows)}. Fill or drop "
                                "those rows.")
            dates = pd.to_datetime(given.astype(np.int64).astype(str), format="%Y%m%d", errors="coerce")
            if dates.notna().all():
                return frame.drop(columns=column).set_axis(pd.DatetimeIndex(dates, name="Date"))
        if named:
            raise DataError(
                f"{source}: column {column!r} holds numbers, not dates (such as {given.iloc[0]:g}; Excel serial day "
                "numbers?). Write the dates as YYYY-MM-DD, or as YYYYMMDD numbers."
            )
    if column is None or not (
        pd.api.types.is_object_dtype(frame[column]) or pd.api.types.is_string_dtype(frame[column])
        or pd.api.types.is_datetime64_any_dtype(frame[column])
    ):
        first = frame[column] if column is not None else None
        seen = (f" (its first column, {column!r}, holds numbers such as {first.dropna().iloc[0]:g}: Excel serial day "
                "numbers? write dates as YYYY-MM-DD)") if first is not None and pd.api.types.is_integer_dtype(first) \
            and len(first) else ""
        raise DataError(
            f"{source} has no column of dates{seen}. Name it 'Date' or make it the first column "
            "(as DataFrame.to_csv() writes a DatetimeIndex)."
        )
    raw = frame[column]
    if raw.empty:
        raise DataError(f"{source} has a header but no rows of data: nothing to read. Pass a file with prices.")
    if str(column) == "Price" and len(raw) > 1 and list(raw.iloc[:2]) == ["Ticker", "Date"]:
        raise DataError(
            f"{source} is a yfinance download saved with to_csv (header rows Price, Ticker and Date; columns for "
            "Open, High, Low, Close and Volume). Keep one price per ticker: pd.read_csv(path, header=[0, 1], "
            "index_col=0, skiprows=[2])['Close'].to_csv(path), or use finvae data download."
        )
    dates = _parse_dates(raw, source, column)
    bad = dates.isna() & raw.notna()
    if dates.isna().all() or bad.any():
        rows = [f"row {i} ({raw.iloc[i]!r})" for i in np.flatnonzero(bad.to_numpy())]
        first_bad = raw[bad].iloc[0] if bad.any() else None
        if first_bad is not None and not pd.isna(pd.to_datetime(str(first_bad), errors="coerce")):
            raise DataError(  # each parses alone: pandas read the whole column in the first row's format
                f"{source}: column {column!r} mixes date formats ({raw.iloc[0]!r} in row 0, {first_bad!r} in "
                f"{rows[0].split(' (')[0]}). Write every date in one format, e.g. YYYY-MM-DD."
            )
        raise DataError(
            f"{source}: column {column!r}, used as the dates, holds values that are not dates: "
            f"{_first(rows) if rows else 'all of them'}. Fix them, or name the date column 'Date'."
        )
    if dates.isna().any():
        rows = [f"row {i}" for i in np.flatnonzero(dates.isna().to_numpy())]
        raise DataError(f"{source}: column {column!r} has missing dates: {_first(rows)}. Fill or drop those rows.")
    result = frame.drop(columns=column)
    result.index = pd.DatetimeIndex(dates, name="Date")
    return result


# --------------------------------------------------------------------------- downloads


def _yf_download(tickers: list[str], start, end, interval: str) -> pd.DataFrame:
    """The one call to Yahoo Finance: ``yfinance.download`` in its 1.x layout.

    Returns yfinance's frame unchanged: columns a MultiIndex (Price, Ticker)
    with ``Close`` already adjusted (``auto_adjust=True``); a ticker that failed
    has all-NaN columns (including an ``Adj Close``), or the frame is empty.
    ``yfinance.download`` logs per-ticker failures instead of raising, so this
    reads its log: rate limiting is raised as ``YFRateLimitError`` and a
    missing network as ``ConnectionError``; other reasons are attached to the
    frame's ``attrs`` for the messages. Tests replace this function.
    """
    import yfinance as yf  # imported here: it is slow to import and not needed offline
    from yfinance.exceptions import YFRateLimitError

    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = _Collect(level=logging.WARNING)
    logger = logging.getLogger("yfinance")
    logger.addHandler(handler)  # also keeps yfinance's own error lines off the user's stderr
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # yfinance's pandas deprecation warnings are not the user's concern
            frame = yf.download(
                tickers, start=start, end=end, interval=interval,
                # Without a start, yfinance would fetch one month; "max" means "from the first price".
                **({"period": "max"} if start is None else {}),
                auto_adjust=True, actions=False, ignore_tz=True, group_by="column",
                multi_level_index=True, progress=False, threads=False,
            )
    finally:
        logger.removeHandler(handler)
    if frame is None:
        frame = pd.DataFrame()
    if any(_RATE_LIMIT_PATTERN.search(m) for m in messages):
        raise YFRateLimitError()
    network = [m for m in messages if _NETWORK_PATTERN.search(m)]
    if network and frame.dropna(how="all").empty:
        # "['AAPL']: DNSError('Failed to perform, curl: (6) ... See https://curl.se/...')" becomes
        # "DNSError: Failed to perform, curl: (6) ...": the ticker is named by the caller.
        text = re.sub(r"^\[[^\]]*\]:\s*", "", network[-1].strip()).split(" See https://curl.se")[0]
        raise ConnectionError(re.sub(r"^(\w+)\(['\"]", r"\1: ", text).rstrip("'\") "))
    frame.attrs[_REASON_ATTR] = "; ".join(m.strip() for m in messages if m.strip() and "Failed download" not in m)
    return frame


def _adjusted_close(raw: pd.DataFrame, ticker: str) -> pd.Series | None:
    """The adjusted close of ``ticker`` in a yfinance frame, or None if it has no price.

    ``Adj Close`` wins when it holds prices (the ``auto_adjust=False`` layout,
    where ``Close`` is unadjusted); otherwise ``Close`` (``auto_adjust=True``,
    where ``Close`` is adjusted and a failed ticker's ``Adj Close`` is all NaN).
    """
    if raw is None or raw.empty:
        return None
    sub = raw
    if isinstance(raw.columns, pd.MultiIndex):
        # group_by="column" gives (Price, Ticker); group_by="ticker" gives (Ticker, Price).
        levels = [set(map(str, raw.columns.get_level_values(i))) for i in range(raw.columns.nlevels)]
        field = next((i for i, names in enumerate(levels) if names & {"Close", "Adj Close"}), None)
        other = [i for i in range(raw.columns.nlevels) if i != field]
        if field is None or len(other) != 1 or ticker not in levels[other[0]]:
            return None
        sub = raw.xs(ticker, axis=1, level=other[0])
    for name in ("Adj Close", "Close"):
        if name in sub.columns:
            column = sub[name]
            if isinstance(column, pd.DataFrame):  # a ticker listed twice: take the first
                column = column.iloc[:, 0]
            column = pd.to_numeric(column, errors="coerce").dropna()
            if not column.empty:
                return column
    return None


def _tidy(series: pd.Series, ticker: str) -> pd.Series:
    index = pd.DatetimeIndex(series.index, freq=None)  # a cached copy has no freq: neither may a fresh one
    if index.tz is not None:
        index = index.tz_localize(None)
    series = pd.Series(series.to_numpy(dtype=np.float64), index=index, name=ticker)
    # Yahoo sometimes repeats the latest bar; keep its last version.
    return series[~series.index.duplicated(keep="last")].sort_index()


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    """``cache_dir``, else $FINVAE_CACHE_DIR, else the user cache dir; prices go in its ``prices`` folder."""
    root = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV_VAR) or platformdirs.user_cache_dir(
        "finvae")
    return Path(root).expanduser() / "prices"


def _date_key(stamp: pd.Timestamp | None, default: str) -> str:
    if stamp is None:
        return default
    return stamp.strftime("%Y-%m-%d") if stamp == stamp.normalize() else stamp.isoformat().replace(":", "")


def _cache_file(folder: Path, ticker: str, interval: str, start, end) -> Path:
    # An open-ended request ("up to now") is keyed by today's date: served from the cache
    # for the rest of the day, downloaded afresh tomorrow.
    today = pd.Timestamp.today().strftime("%Y-%m-%d")
    name = "_".join([urllib.parse.quote(ticker, safe=""), interval,
                     _date_key(start, "first"), _date_key(end, f"asof-{today}")])
    return folder / f"{name}.csv"


def _read_cache(path: Path, ticker: str) -> pd.Series | None:
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path, index_col=0, parse_dates=True)
        return _tidy(frame.iloc[:, 0], ticker)
    except (ValueError, IndexError, OSError, pd.errors.ParserError):
        return None  # a damaged cache file is downloaded again (and overwritten)


def _write_cache(path: Path, series: pd.Series) -> None:
    from finvae._atomic import write_csv

    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(series.rename_axis("Date"), path)  # atomic: a reader never sees a half-written file


def _parse_date(value, name: str) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{name}={value!r} is not a date. Use the form '2015-01-31'.") from exc
    if pd.isna(stamp):
        raise DataError(f"{name}={value!r} is not a date. Use the form '2015-01-31'.")
    return stamp


def _for_yfinance(stamp: pd.Timestamp | None):
    """yfinance parses strings with '%Y-%m-%d' only: pass dates as such, times as datetimes."""
    if stamp is None:
        return None
    return stamp.strftime("%Y-%m-%d") if stamp == stamp.normalize() else stamp.to_pydatetime()


def _tickers(tickers: str | Iterable[str]) -> list[str]:
    if isinstance(tickers, str):
        tickers = tickers.replace(",", " ").split()
    symbols = []
    for ticker in tickers:
        if not isinstance(ticker, str) or not ticker.strip():
            raise DataError(f"Tickers must be non-empty strings such as 'AAPL'; got {ticker!r}.")
        symbol = ticker.strip().upper()  # Yahoo symbols are case-insensitive; yfinance upper-cases them
        if symbol not in symbols:
            symbols.append(symbol)
    if not symbols:
        raise DataError("No tickers given. Pass one or more Yahoo Finance symbols, e.g. ['AAPL', 'MSFT'].")
    return symbols


def _is_rate_limit(exc: BaseException) -> bool:
    return type(exc).__name__ == "YFRateLimitError" or bool(_RATE_LIMIT_PATTERN.search(str(exc)))


def _is_ticker_missing(exc: BaseException) -> bool:
    # YFTickerMissingError and its subclasses (YFTzMissingError, YFPricesMissingError), matched
    # by name through the class hierarchy so that yfinance is not imported for the check.
    return any(cls.__name__ == "YFTickerMissingError" for cls in type(exc).__mro__)


def _fetch(ticker: str, start, end, interval: str, *, folder: Path, done: list[str]) -> tuple[pd.Series | None, str]:
    """Download one ticker, retrying on rate limits; (prices or None, reason when None)."""
    cached = f" The {len(done)} ticker(s) already downloaded ({_first(done)}) are cached in {folder}." if done else ""
    for attempt in range(_RATE_LIMIT_RETRIES + 1):
        try:
            raw = _yf_download([ticker], _for_yfinance(start), _for_yfinance(end), interval)
            break
        except Exception as exc:  # yfinance raises many types; each is translated below
            if _is_ticker_missing(exc):
                return None, str(exc).replace(f"${ticker}: ", "")
            if _is_rate_limit(exc):
                if attempt < _RATE_LIMIT_RETRIES:
                    _sleep(_BACKOFF_SECONDS * 2**attempt)
                    continue
                waited = sum(_BACKOFF_SECONDS * 2**i for i in range(_RATE_LIMIT_RETRIES))
                raise DataError(
                    f"Yahoo Finance is rate-limiting requests (too many requests): downloading {ticker} still "
                    f"failed after {_RATE_LIMIT_RETRIES} retries over {waited:g} s. Wait a few minutes and run "
                    f"the same call again.{cached}"
                ) from exc
            if isinstance(exc, OSError) or _NETWORK_PATTERN.search(str(exc)):
                raise DataError(
                    f"Could not reach Yahoo Finance to download {ticker} ({type(exc).__name__}: {exc}). "
                    f"Check the internet connection. Offline, use {_SAMPLE_HINT}, or repeat a request made "
                    f"while online: downloads are cached in {folder} for the same tickers, dates and interval."
                    f"{cached}"
                ) from exc
            raise DataError(
                f"yfinance failed while downloading {ticker}: {type(exc).__name__}: {exc}. If it persists, "
                f"upgrade yfinance (pip install -U yfinance), or use {_SAMPLE_HINT}."
            ) from exc
    series = _adjusted_close(raw, ticker)
    if series is None:
        return None, raw.attrs.get(_REASON_ATTR) or "Yahoo Finance returned no prices"
    return _tidy(series, ticker), ""


def download_prices(
    tickers: str | Iterable[str],
    start=None,
    end=None,
    *,
    interval: str = "1d",
    cache_dir: str | os.PathLike | None = None,
    refresh: bool = False,
    progress: bool = False,
) -> pd.DataFrame:
    """Adjusted close prices from Yahoo Finance (``yfinance``), cached on disk.

    Each ticker is downloaded on its own (dividends and splits adjusted,
    ``auto_adjust=True``) and cached as a CSV file keyed by ticker, interval,
    start and end. A repeated request is served from the cache without a
    network; a request with no ``end`` is keyed by today's date, so it is
    cached for the day and downloaded afresh the next day. ``refresh=True``
    downloads again and overwrites the cache. Rate limiting is retried 4 times
    with exponential backoff (2, 4, 8, 16 s) before giving up.

    The tickers' prices are aligned on the union of their dates. Dates on
    which a ticker has no price are NaN, and nothing is filled:

    - **late listing**: NaN before the ticker's first price;
    - **holiday gaps**: NaN on a date when its market was closed but another
      ticker's was open (e.g. mixing exchanges);
    - **delisting**: a delisted ticker usually has no data at all on Yahoo
      (see Raises and Warns); otherwise NaN after its last price.

    :func:`prices_to_returns` keeps all of them NaN.

    Parameters
    ----------
    tickers : str or iterable of str
        Yahoo Finance symbols, e.g. ``["AAPL", "MSFT"]``, ``"^GSPC"``,
        ``"BRK-B"``. A string may hold several, separated by spaces or commas.
        Case does not matter (columns come upper-case); repeats are dropped.
    start, end : str, datetime or Timestamp, optional
        First date (inclusive) and end date (exclusive, as in yfinance).
        Default: from the first available price, up to now.
    interval : str, default="1d"
        Bar length: one of 1m, 2m, 5m, 15m, 30m, 60m, 90m, 1h, 1d, 5d, 1wk,
        1mo, 3mo. Yahoo keeps intraday bars for a limited time only.
    cache_dir : str or path, optional
        Cache root (files go in its ``prices`` folder). Default: the
        ``FINVAE_CACHE_DIR`` environment variable if set, else
        ``platformdirs.user_cache_dir("finvae")``.
    refresh : bool, default=False
        Download again even if the cache has the request.
    progress : bool, default=False
        Show a progress bar over tickers (when there are two or more).

    Returns
    -------
    prices : DataFrame of shape (n_dates, n_found)
        ``float64`` adjusted close prices, a sorted tz-naive ``DatetimeIndex``
        named ``"Date"`` (exchange-local dates), one column per ticker found,
        in the order asked.

    Raises
    ------
    DataError
        If there is no network (offline, use :func:`load_sp500_sample` or a
        cached request); if Yahoo keeps rate-limiting after the retries; if no
        ticker has prices (unknown or delisted ticker, or a range without
        trading days: the message names them); if ``start`` is not before
        ``end``, a date does not parse, or no ticker is given; or if yfinance
        fails in another way (the message names the ticker and the error).
    ValueError
        If ``interval`` is not one Yahoo serves.

    Warns
    -----
    UserWarning
        If some tickers have no prices: the message names them and yfinance's
        reason, and the result leaves them out.

    Examples
    --------
    >>> from finvae.datasets import download_prices, prices_to_returns
    >>> prices = download_prices(["AAPL", "MSFT"], start="2015-01-01", end="2020-01-01")  # doctest: +SKIP
    >>> returns = prices_to_returns(prices)                                               # doctest: +SKIP
    """
    symbols = _tickers(tickers)
    if interval not in _INTERVALS:
        raise ValueError(f"interval={interval!r} is not one Yahoo Finance serves; use one of {', '.join(_INTERVALS)}.")
    start_at, end_at = _parse_date(start, "start"), _parse_date(end, "end")
    if start_at is not None and end_at is not None and start_at >= end_at:
        raise DataError(
            f"Empty date range: start={_label(start_at)} is not before end={_label(end_at)} (end is exclusive). "
            "Pass an end date after the start date."
        )
    folder = _cache_root(cache_dir)
    found: dict[str, pd.Series] = {}
    missing: dict[str, str] = {}
    with tqdm(symbols, desc="Downloading prices", unit="ticker", disable=not progress or len(symbols) < 2) as bar:
        for symbol in bar:
            bar.set_postfix_str(symbol, refresh=False)
            path = _cache_file(folder, symbol, interval, start_at, end_at)
            series = None if refresh else _read_cache(path, symbol)
            if series is None:
                series, reason = _fetch(symbol, start_at, end_at, interval, folder=folder, done=list(found))
                if series is None:
                    missing[symbol] = reason
                    continue
                _write_cache(path, series)
            found[symbol] = series

    span = f"from {_label(start_at) if start_at is not None else 'the first price'} to " \
           f"{_label(end_at) if end_at is not None else 'now'} ({interval})"
    reasons = [f"{symbol}: {reason}" for symbol, reason in missing.items()]
    if not found:
        what = f"ticker {symbols[0]!r}" if len(symbols) == 1 else f"any of the tickers {', '.join(symbols)}"
        raise DataError(
            f"No prices for {what} {span}. yfinance says: {_first(reasons, limit=5)}. Each ticker is either "
            "unknown or delisted (check the symbol on finance.yahoo.com: e.g. 'BRK-B', '^GSPC', 'VOD.L'), or "
            f"the range holds no trading days: widen it. Offline, use {_SAMPLE_HINT}."
        )
    if missing:
        warnings.warn(
            f"No prices for {len(missing)} of {len(symbols)} tickers, left out of the result: "
            f"{_first(reasons, limit=5)}. They may be unknown or delisted (check them on finance.yahoo.com) "
            f"or have no data {span}. Returned: {', '.join(found)}.",
            UserWarning,
            stacklevel=2,
        )
    prices = pd.concat(list(found.values()), axis=1, sort=True)
    prices = prices[list(found)]  # concat sorted the dates; keep the columns in the order asked
    prices.index.name = "Date"
    prices.columns.name = None
    return prices
