"""Walk-forward anomaly scores, and a backtest that de-risks a portfolio on the flags.

- :func:`walk_forward`: refit an anomaly estimator every ``refit_every`` days on
  past returns only, and score the next block of days out of sample.
- :func:`anomaly_overlay`: hold a portfolio, cut its exposure for ``hold``
  days after each flag, and compare the result (after costs) with holding the
  portfolio throughout and with a volatility-targeting baseline at the same
  average exposure.
"""

from __future__ import annotations

import os
import sys
import threading
import types
import warnings
from dataclasses import dataclass
from numbers import Integral, Real
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy.optimize import brentq
from sklearn.base import clone
from tqdm.auto import tqdm

from finvae._exceptions import DataError, warn_caller
from finvae._validation import as_date_of, check_labels, check_not_levels, day_label
from finvae.scoring import threshold as training_threshold

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["OverlayResult", "anomaly_overlay", "rows_per_year", "walk_forward"]

#: Trading days per year, for annualising.
PERIODS_PER_YEAR = 252


def rows_per_year(index: pd.Index) -> int:
    """How many rows a year ``index`` holds, for annualising: 252 for daily trading data.

    The count is the rows per 365.25 days of the dates spanned. Within a quarter of 252 (business days,
    with or without holidays) it is 252; otherwise it is the count itself, rounded: about 52 for weekly
    rows, 12 for monthly ones, 365 for markets that trade every day. 252 for an index that is not of
    dates, or spans less than 30 days.

    Examples
    --------
    >>> import pandas as pd
    >>> from finvae.backtest import rows_per_year
    >>> rows_per_year(pd.bdate_range("2020-01-01", "2023-12-31"))
    252
    >>> rows_per_year(pd.date_range("2020-01-01", "2023-12-31", freq="W"))
    52
    """
    if not isinstance(index, pd.DatetimeIndex) or len(index) < 2:
        return PERIODS_PER_YEAR
    days = (index[-1] - index[0]) / pd.Timedelta(days=1)
    if days < 30:
        return PERIODS_PER_YEAR
    count = (len(index) - 1) / (days / 365.25)
    return PERIODS_PER_YEAR if abs(count / PERIODS_PER_YEAR - 1) <= 0.25 else max(1, int(round(count)))

#: Used when the estimator has no ``threshold_``: flag the top 1 % of training scores.
DEFAULT_CONTAMINATION = 0.01

def _returns_frame(returns, what: str = "returns") -> pd.DataFrame:
    """A numeric DataFrame with sorted unique dates, or a DataError naming the problem."""
    if isinstance(returns, pd.Series):
        returns = returns.to_frame(name=returns.name if returns.name is not None else "asset")
    if not isinstance(returns, pd.DataFrame):
        raise DataError(f"{what} must be a pandas DataFrame (dates × assets); got {type(returns).__name__}.")
    if returns.shape[1] == 0 or len(returns) == 0:
        raise DataError(f"{what} is empty (shape {returns.shape}).")
    bad = [c for c, dtype in returns.dtypes.items()
           if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)]
    if bad:
        raise DataError(f"{what} must be numeric, but column(s) {bad[:3]} are not.")
    check_labels(returns, what)
    if np.isinf(returns.to_numpy(dtype=np.float64, na_value=np.nan)).any():
        raise DataError(f"{what} holds infinite values. Replace them with NaN (missing) or fix the prices.")
    check_not_levels(returns.to_numpy(dtype=np.float64, na_value=np.nan), what)  # they would compound to inf
    return returns


# --------------------------------------------------------------------------------------------------
# Walk-forward scoring
# --------------------------------------------------------------------------------------------------


def _per_date(scores, index: pd.Index, estimator) -> np.ndarray:
    """The estimator's ``score`` output as one float per date of ``index``."""
    name = type(estimator).__name__
    if isinstance(scores, pd.DataFrame) and scores.shape[1] == 1:
        scores = scores.iloc[:, 0]
    if isinstance(scores, pd.Series):
        if not scores.index.equals(index):
            raise ValueError(f"{name}.score returned a Series whose index is not the dates it was given.")
        return scores.to_numpy(dtype=np.float64, na_value=np.nan)
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or len(values) != len(index):
        raise TypeError(
            f"{name}.score returned {'a scalar' if values.ndim == 0 else f'shape {values.shape}'}; walk_forward "
            f"needs one score per date ({len(index)} here), as FinVAE.score gives. A scikit-learn scorer "
            "that returns one number per data set cannot drive a walk-forward."
        )
    return values


def _fit_score_block(estimator, train: pd.DataFrame, history: pd.DataFrame, n_scored: int,
                     contamination: float | None) -> tuple[np.ndarray, float]:
    """Fit on ``train``; score ``history`` (which ends with the block) and keep the block's last rows."""
    end = train.index[-1]
    which = f"the refit on the {len(train):,} rows up to {day_label(end)}"
    try:
        estimator.fit(train)
    except DataError as error:  # one line for the user: which refit, and for assets without data what to do
        missing = train.columns[train.isna().all().to_numpy()]
        before = history.loc[history.index < train.index[0], missing]
        gone = missing[before.notna().any().to_numpy()]  # had returns before this window: delisted
        hint = ""
        if len(gone):
            hint = (f" {', '.join(map(str, gone[:3]))}{' ...' if len(gone) > 3 else ''} had returns only before this "
                    "refit's window (delisted?): pass a longer window, or leave them out of this period.")
        elif len(missing):
            hint = (f" The walk-forward starts before the first returns of {', '.join(map(str, missing[:3]))}"
                    f"{' ...' if len(missing) > 3 else ''}: a refit cannot learn an asset it has no returns of. "
                    "Start it later (start=, or a larger min_train), so that the first refit trains on some months "
                    "of every asset, or leave the late ones out.")
        raise DataError(f"{which}: {error}{hint}") from error
    except Exception as error:
        error.add_note(f"In walk_forward, {which}.")
        raise
    scores = _per_date(estimator.score(history), history.index, estimator)[-n_scored:]
    if contamination is None and hasattr(estimator, "threshold_"):
        threshold = float(estimator.threshold_)
    else:
        in_sample = _per_date(estimator.score(train), train.index, estimator)
        threshold = training_threshold(in_sample, DEFAULT_CONTAMINATION if contamination is None else contamination)
    return scores, threshold


def _fit_score_numbered(number: int, parent: int, *args) -> tuple[int, np.ndarray, float, list]:
    """:func:`_fit_score_block`, tagged with the block's number (results may arrive out of order), and its warnings.

    The refit's warnings are recorded and returned, for :func:`walk_forward` to show once each under the caller's
    filters: in a worker process (a Dask worker's threads included) they would otherwise go to the worker's stderr,
    where no filter of the caller reaches them, and in the caller's process they would repeat once per refit.
    Recording holds a lock, as ``catch_warnings`` is process-wide (the refits' training holds one anyway). Only
    threads of the caller's own process (joblib's threading backend) show them as they arise: recording there
    would also swallow the caller's other threads' warnings. A refit that fails carries its warnings as notes.
    """
    if os.getpid() == parent and threading.current_thread() is not threading.main_thread():
        return (number, *_fit_score_block(*args), [])
    with _RECORDING, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the caller's filters decide, when walk_forward shows them
        try:
            result = _fit_score_block(*args)
        except Exception as error:  # the warnings that may explain the failure, kept with it
            for warning in caught:
                error.add_note(f"{warning.category.__name__} in this refit: {warning.message}")
            raise
    return (number, *result, [(str(w.message), w.category, w.filename, w.lineno) for w in caught])


#: Held while a refit's warnings are recorded (``catch_warnings`` changes the process's filters).
_RECORDING = threading.Lock()

#: Packages whose place in a warning says nothing to the caller: the plumbing that ran the refit, and finvae
#: itself. Their warnings are shown at the caller's line, unless they are deprecations, which stay where Python
#: hides them by default.
_PLUMBING = ("multiprocessing", "concurrent", "threading", "runpy", "joblib", "loky", "dask", "distributed",
             "finvae", "sklearn")


def _module_named(filename: str) -> str | None:
    """The name of the loaded module read from ``filename``, if any."""
    path = os.path.abspath(filename)
    for name, loaded in list(sys.modules.items()):
        source = vars(loaded).get("__file__") if isinstance(loaded, types.ModuleType) else None
        if isinstance(source, str) and os.path.abspath(source) == path:
            return name
    return None


def _show_refit_warning(message: str, category: type[Warning], filename: str, lineno: int) -> None:
    """Show a recorded warning as if raised here: at its own place (so that filters by module apply), or at the
    caller's line when that place is finvae or the plumbing that ran the refit."""
    try:
        warning = category(message)
    except Exception:  # a class whose constructor wants more than the message: the same class, its text
        warning = category.__new__(category)
        warning.args = (message,)
    module = _module_named(filename)
    deprecation = isinstance(warning, DeprecationWarning | PendingDeprecationWarning)
    if module is not None and module.split(".")[0] in _PLUMBING and not deprecation:
        warn_caller(warning)
    elif module is not None:
        warnings.warn_explicit(warning, type(warning), filename, lineno, module=module)
    else:
        warnings.warn_explicit(warning, type(warning), filename, lineno)


def walk_forward(
    estimator,
    returns: pd.DataFrame,
    *,
    refit_every: int = 63,
    min_train: int = 756,
    window: str | int = "expanding",
    start=None,
    contamination: float | None = None,
    n_jobs: int | None = None,
    verbose: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Out-of-sample anomaly scores and flags from an estimator refitted on past returns only.

    The scored dates are cut into consecutive blocks of ``refit_every`` rows.
    For the block whose first scored row is ``s`` (a position in
    ``returns``), a fresh ``sklearn.base.clone`` of ``estimator`` is

    1. fitted on the training rows ``returns.iloc[lo:s]``: every row strictly
       before the block, ``lo = 0`` for an expanding window, ``lo = s - window``
       for a rolling window of ``window`` rows;
    2. asked for ``score(returns.iloc[:e])``, all returns up to the block's
       last row ``e - 1`` (causal scores need history), of which the block's
       rows are kept.

    No fit ever sees a return of its block or later. The scores of a block see
    its own days only through the estimator's ``score``, which must be causal
    (a date's score uses returns up to and including that date, as
    ``FinVAE.score`` does); with such an estimator, changing the returns after
    a date changes no score, flag or threshold at or before it.

    Parameters
    ----------
    estimator : estimator
        Unfitted, sklearn-style (``clone`` must work): ``fit(returns)`` and a
        per-date ``score(returns)`` (a Series on the same dates, or a 1-D array
        as long), higher = more anomalous; e.g. :class:`finvae.FinVAE`.
    returns : DataFrame of shape (n_dates, n_assets)
        Daily returns, sorted unique dates as index, NaN where missing. Never
        modified.
    refit_every : int, default=63
        Rows (trading days) per block: the estimator is refitted every
        ``refit_every`` days (63 ≈ a quarter).
    min_train : int, default=756
        Fewest training rows for the first fit (756 ≈ three years).
    window : "expanding" or int, default="expanding"
        Train on all the past (``"expanding"``) or on the latest ``window``
        rows only (an int, at least ``min_train``).
    start : date-like or None, default=None
        First date to score. Scoring starts at the later of ``start`` and the
        first date with ``min_train`` rows before it.
    contamination : float in (0, 0.5] or None, default=None
        How the flag threshold is set at each refit. None: the fitted
        estimator's ``threshold_`` (FinVAE learns it at fit time from its
        ``contamination``); an estimator without ``threshold_`` gets the
        ``1 - 0.01`` quantile of its scores on its own training rows. A float
        uses that quantile rule, ``1 - contamination``, for any estimator.
    n_jobs : int or None, default=None
        Refits to run in parallel through :class:`joblib.Parallel`. None means
        1 unless inside a ``joblib.parallel_backend`` / ``parallel_config``
        context; -1 uses every core. The result does not depend on it.
    verbose : int, default=0
        Show a progress bar over the refits when positive.
    checkpoint_dir : str, PathLike or None, default=None
        Folder to resume from. Each finished block is written there at once,
        atomically (a temporary file, then :func:`os.replace`), as a small
        JSON file named by a key: the estimator's class and parameters
        (``get_params(deep=True)``), the block's rows and ``contamination``,
        and a fingerprint of the returns (values, dates, assets) up to the
        block's last day. A re-run with the same folder skips the blocks
        found there and returns the same result as an uninterrupted run;
        other parameters or other data never reuse a block. Returns extended
        with new days reuse the blocks that end before them. Files are JSON
        (no pickle: loading one runs no code); a damaged one is refitted with
        a warning. Seed the estimator (``random_state``) for a resumed result
        identical to an uninterrupted one. None: no files. See docs/cluster.md.

    Returns
    -------
    DataFrame
        Indexed by the scored dates (a tail of ``returns.index``), with columns

        - ``score`` (float): out-of-sample score, NaN where the estimator
          gives none;
        - ``flag`` (bool): ``score > threshold`` (False where either is NaN);
        - ``threshold`` (float): the threshold of the refit that scored the date;
        - ``refit_date``: the last date of that refit's training rows, i.e. the
          last date whose return the model saw (the day before its block).

    Raises
    ------
    DataError
        On unusable returns, fewer rows than ``min_train + 1``, or a
        ``checkpoint_dir`` that cannot be written to.
    TypeError
        If ``estimator.score`` does not give one score per date.

    Notes
    -----
    **Determinism.** Each refit uses ``clone(estimator)``, so it starts from the
    same parameters, ``random_state`` included: with a seeded estimator the
    result is identical whatever ``n_jobs`` or the joblib backend (fits in
    threads of one process run one at a time, as they share torch's random
    generator; processes run in parallel). With
    ``random_state=None`` it is left as is (each refit draws its own seed), as
    the estimator would do on its own.

    **Clusters.** The refits are independent joblib tasks, so a joblib backend
    spreads them, e.g. over a Dask cluster (``pip install "finvae[dask]"``)::

        import joblib
        from dask.distributed import Client, LocalCluster

        if __name__ == "__main__":  # worker processes re-import this script
            with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster):
                with joblib.parallel_config(backend="dask"):
                    wf = walk_forward(FinVAE(random_state=0, verbose=0), returns)

    or ``Client("tcp://scheduler-address:8786")`` for a running scheduler
    (``finvae run --scheduler ADDRESS``). A script that starts a
    ``LocalCluster`` (or any process pool) needs the
    ``if __name__ == "__main__":`` guard, since each worker process imports it
    again; and the estimator's class must live in an importable module (not in
    that script's body or a notebook cell) so that workers can unpickle it.
    Each task gets a clone of the estimator and the returns up to its block's
    end (the data are shipped once per refit) and sends back only its scores
    and threshold, never a fitted model; FinVAE trains on one torch thread per
    task on CPU, so give Dask workers one thread each
    (``threads_per_worker=1``) and as many workers as cores. Ray:
    ``ray.util.joblib.register_ray()``, then ``parallel_config(backend="ray")``.
    Give the estimator ``verbose=0`` so that the refits' own logs do not
    interleave with the progress bar.

    **Cost.** Scoring a block passes all earlier returns through ``score``;
    with ``n`` days that is about ``n² / (2 · refit_every)`` scored days in all.

    Examples
    --------
    >>> from finvae import FinVAE  # doctest: +SKIP
    >>> wf = walk_forward(FinVAE(random_state=0, verbose=0), returns, refit_every=63, min_train=756,
    ...                   start="2000-01-01", n_jobs=2, verbose=1)  # doctest: +SKIP
    >>> wf[wf["flag"]].head()  # doctest: +SKIP
    """
    returns = _returns_frame(returns)
    for name, value, low in (("refit_every", refit_every, 1), ("min_train", min_train, 1)):
        if not isinstance(value, Integral) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer ≥ {low}; got {value!r}.")
    if isinstance(window, str):
        if window != "expanding":
            raise ValueError(f"window must be 'expanding' or an integer number of rows; got {window!r}.")
        rolling = None
    elif isinstance(window, Integral) and not isinstance(window, bool):
        if window < min_train:
            raise ValueError(f"A rolling window of {window} rows is shorter than min_train={min_train}.")
        rolling = int(window)
    else:
        raise ValueError(f"window must be 'expanding' or an integer number of rows; got {window!r}.")
    if contamination is not None and not (isinstance(contamination, Real) and 0 < contamination <= 0.5):
        raise ValueError(f"contamination must be in (0, 0.5] or None; got {contamination!r}.")
    if not (hasattr(estimator, "fit") and hasattr(estimator, "score")):
        raise TypeError(f"{type(estimator).__name__} needs fit and score methods to be walked forward.")

    if not (n_jobs is None or (isinstance(n_jobs, Integral) and not isinstance(n_jobs, bool) and n_jobs != 0)):
        raise ValueError(f"n_jobs must be None, a number of processes >= 1, or negative (-1: one per core); "
                         f"got {n_jobs!r}.")
    n = len(returns)
    first = int(min_train)
    if start is not None:
        key = as_date_of(returns.index, start, "start") if isinstance(returns.index, pd.DatetimeIndex) else start
        first = max(first, int(returns.index.searchsorted(key, side="left")))
    if first >= n:
        raise DataError(
            f"Nothing to score: returns has {n} rows, and scoring starts at row {first} "
            f"(min_train={min_train}{f', start={start!r}' if start is not None else ''})."
        )
    blocks = [(s, min(s + refit_every, n)) for s in range(first, n, refit_every)]
    rows = [(0 if rolling is None else max(0, s - rolling), s, e) for s, e in blocks]  # (lo, s, e) per block

    results: dict[int, tuple[np.ndarray, float]] = {}
    store = keys = None
    if checkpoint_dir is not None:
        from finvae._checkpoint import BlockStore

        store = BlockStore(checkpoint_dir, estimator, returns, contamination)
        keys = store.keys(rows)
        for number, ((_, s, e), key) in enumerate(zip(rows, keys, strict=True)):
            saved = store.load(key, e - s)
            if saved is not None:
                results[number] = saved

    def jobs():
        for number, (lo, s, e) in enumerate(rows):
            if number not in results:
                yield delayed(_fit_score_numbered)(
                    number, os.getpid(), clone(estimator), returns.iloc[lo:s], returns.iloc[:e], e - s, contamination
                )

    # Results stream back as each refit ends (in any order), so the bar moves with each refit and each
    # finished block is checkpointed at once; a backend that cannot stream (e.g. "multiprocessing")
    # returns them all at the end instead.
    try:
        parallel = Parallel(n_jobs=n_jobs, return_as="generator_unordered")
    except ValueError:
        parallel = Parallel(n_jobs=n_jobs)
    shown = set()  # the refits' recorded warnings, each once: ten refits need not say the same thing ten times
    with tqdm(total=len(blocks), initial=len(results), desc="walk-forward refits", unit="refit",
              disable=not verbose) as bar:
        if len(results) < len(blocks):
            outputs = parallel(jobs())
            try:
                for number, scores, threshold, caught in outputs:
                    for warning in caught:  # now, before the block is saved: an "error" filter stops here
                        if warning not in shown:
                            shown.add(warning)
                            _show_refit_warning(*warning)
                    results[number] = scores, threshold
                    if store is not None:
                        store.save(keys[number], rows[number], scores, threshold)
                    bar.update()
            except BaseException:
                if hasattr(outputs, "close"):  # stopped early: closing the generator stops the workers
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # joblib's note on the cancelled tasks: the error says enough
                        outputs.close()
                raise
    results = [results[number] for number in range(len(blocks))]

    index = returns.index[first:]
    scores = np.concatenate([scores for scores, _ in results])
    thresholds = np.concatenate([np.full(e - s, thr) for (s, e), (_, thr) in zip(blocks, results, strict=True)])
    refit_dates = returns.index[np.concatenate([np.full(e - s, s - 1) for s, e in blocks])]
    with np.errstate(invalid="ignore"):
        flags = scores > thresholds  # NaN compares False
    return pd.DataFrame(
        {"score": scores, "flag": flags, "threshold": thresholds, "refit_date": refit_dates}, index=index
    )


# --------------------------------------------------------------------------------------------------
# Anomaly overlay backtest
# --------------------------------------------------------------------------------------------------


def _metrics(returns: pd.Series, exposure: pd.Series, periods_per_year: int) -> dict[str, float]:
    """Performance of daily simple returns; the definitions are those of ``OverlayResult.summary``."""
    r = returns.to_numpy(dtype=np.float64)
    p = exposure.to_numpy(dtype=np.float64)
    n = len(r)
    wealth = np.cumprod(1.0 + r)
    peak = np.maximum.accumulate(np.concatenate([[1.0], wealth]))[1:]
    max_dd = float(np.min(wealth / peak - 1.0))
    annual = float(wealth[-1] ** (periods_per_year / n) - 1.0) if wealth[-1] > 0 else -1.0
    std = r.std(ddof=1) if n > 1 else np.nan
    downside = np.sqrt(np.mean(np.minimum(r, 0.0) ** 2))
    root = np.sqrt(periods_per_year)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "annual return": annual,
            "volatility": float(std * root),
            "Sharpe": float(r.mean() / std * root) if std > 0 else np.nan,
            "Sortino": float(r.mean() / downside * root) if downside > 0 else np.nan,
            "max drawdown": max_dd,
            "Calmar": annual / abs(max_dd) if max_dd < 0 else np.nan,
            "turnover": float(np.abs(np.diff(p, prepend=p[0])).mean() * periods_per_year),
            "days de-risked": float(np.mean(p < 1.0)),
            "average exposure": float(p.mean()),
        }


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) positions of each run of True in ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True))


@dataclass(frozen=True)
class OverlayResult:
    """The outcome of :func:`anomaly_overlay`: daily series and their comparison.

    Every Series is indexed by the backtest dates (those of ``flags``) and
    holds *simple* daily returns after costs, ready for quantstats or
    empyrical (``qs.reports.html(result.returns, result.benchmark)``).

    Attributes
    ----------
    returns : Series
        The overlay strategy, named ``"finvae_overlay"``.
    positions : Series
        The overlay's exposure to the portfolio held on each day (1 = fully
        invested, ``exposure_when_flagged`` when de-risked).
    benchmark : Series
        Buy and hold: the portfolio at full exposure every day, named
        ``"buy_and_hold"``.
    vol_target : Series
        The volatility-targeting baseline at the overlay's average exposure,
        named ``"vol_target"``.
    vol_target_positions : Series
        Its exposure on each day.
    flags : Series of bool
        The flags the overlay acted on.
    cost_bps : float
        Cost per unit of turnover, in basis points.
    periods_per_year : int
        Days per year used to annualise.
    """

    returns: pd.Series
    positions: pd.Series
    benchmark: pd.Series
    vol_target: pd.Series
    vol_target_positions: pd.Series
    flags: pd.Series
    cost_bps: float
    periods_per_year: int = PERIODS_PER_YEAR

    def __repr__(self) -> str:
        """A summary, not the series: the period, the flags and the drawdowns (``.summary()`` has the rest)."""
        dates = self.returns.index
        if not len(dates):
            return "OverlayResult(no dates)"
        table = self.summary()
        return (f"OverlayResult({day_label(dates[0])} to {day_label(dates[-1])}, {len(dates):,} days, "
                f"{int(self.flags.sum()):,} flags, de-risked {table.at['days de-risked', 'overlay']:.1%} of days; "
                f"max drawdown {table.at['max drawdown', 'overlay']:.1%} against buy and hold "
                f"{table.at['max drawdown', 'buy & hold']:.1%}; costs {self.cost_bps:g} bps; .summary(), .plot())")

    def summary(self) -> pd.DataFrame:
        r"""Performance of the overlay, buy and hold, and the volatility target, after costs.

        With daily simple returns :math:`r_1..r_n`, wealth
        :math:`W_t = \prod_{s \le t} (1 + r_s)` (starting from :math:`W_0 = 1`)
        and :math:`P` = ``periods_per_year`` (risk-free rate 0):

        - annual return: :math:`W_n^{P/n} - 1` (compound);
        - volatility: :math:`\mathrm{std}(r)\sqrt{P}` (``ddof=1``);
        - Sharpe: :math:`\bar r / \mathrm{std}(r) \sqrt{P}`;
        - Sortino: :math:`\bar r / \sqrt{\tfrac1n \sum \min(r_t, 0)^2} \sqrt{P}`
          (as quantstats computes it);
        - max drawdown: :math:`\min_t W_t / \max_{s \le t} W_s - 1` (negative);
        - Calmar: annual return / |max drawdown|;
        - turnover: mean daily :math:`|\Delta \text{exposure}|` × P, in
          portfolio values per year;
        - days de-risked: share of days with exposure below 1;
        - average exposure: mean exposure to the portfolio.

        Returns
        -------
        DataFrame
            One row per measure, one column per strategy: ``"overlay"``,
            ``"buy & hold"``, ``"vol target"``.
        """
        ones = pd.Series(1.0, index=self.benchmark.index)
        columns = {
            "overlay": _metrics(self.returns, self.positions, self.periods_per_year),
            "buy & hold": _metrics(self.benchmark, ones, self.periods_per_year),
            "vol target": _metrics(self.vol_target, self.vol_target_positions, self.periods_per_year),
        }
        table = pd.DataFrame(columns)
        table.attrs.update(cost_bps=self.cost_bps, start=self.returns.index[0], end=self.returns.index[-1])
        return table

    def plot(self, *, figsize: tuple[float, float] = (11.0, 7.0), log_scale: bool = True,
             axes: Sequence[Axes] | None = None) -> Figure:
        """Equity curves with the de-risked periods shaded, and drawdowns below.

        Parameters
        ----------
        figsize : (float, float), default=(11, 7)
            Figure size in inches (of a new figure; ignored with ``axes``).
        log_scale : bool, default=True
            Plot wealth on a log scale (equal percentage moves look equal)
            when it spans a factor of 3 or more, with ticks at 1, 2, 5, 10
            written plainly; within a factor of 3 the axis stays linear.
        axes : sequence of 2 Axes, optional
            Draw into these instead of a new figure: the equity curves' Axes,
            then the drawdowns'.

        Returns
        -------
        matplotlib.figure.Figure
            The new figure, or the one that holds ``axes``.
        """
        import matplotlib.pyplot as plt
        from matplotlib.ticker import PercentFormatter

        from finvae.plotting import _frame_one_date, _given_axes, _growth_axis, _line_markers

        series = {"overlay": self.returns, "buy & hold": self.benchmark, "vol target": self.vol_target}
        colors = {"overlay": "tab:red", "buy & hold": "tab:gray", "vol target": "tab:blue"}
        if axes is not None:
            top, bottom = _given_axes(axes, 2, "OverlayResult.plot (equity curves, drawdowns)")
            fig = top.figure
        else:
            fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=figsize,
                                              gridspec_kw={"height_ratios": [3, 1]}, layout="constrained")
        dates = self.returns.index
        derisked = (self.positions < 1.0).to_numpy()
        for first, last in _runs(derisked):
            # Shade whole days: from the first de-risked day to the day after the last one.
            end = dates[last + 1] if last + 1 < len(dates) else dates[last]
            top.axvspan(dates[first], end, color="tab:orange", alpha=0.25, lw=0)
            bottom.axvspan(dates[first], end, color="tab:orange", alpha=0.25, lw=0)
        wealths = []
        for name, r in series.items():
            wealth = (1.0 + r).cumprod()
            wealths.append(wealth.to_numpy())
            top.plot(dates, wealth, color=colors[name], lw=1.2, label=name, **_line_markers(wealth))
            bottom.plot(dates, wealth / wealth.cummax().clip(lower=1.0) - 1.0, color=colors[name], lw=1.0,
                        **_line_markers(wealth))
        top.plot([], [], color="tab:orange", alpha=0.4, lw=6, label="de-risked (flag + hold)")
        _growth_axis(top, np.concatenate(wealths), "growth of 1, after costs", log=log_scale)
        top.set_title(f"Anomaly overlay vs buy & hold and volatility target (costs {self.cost_bps:g} bps)")
        top.legend(loc="best")  # where it hides the least of the curves
        top.grid(alpha=0.3)
        bottom.set_ylabel("drawdown")
        bottom.yaxis.set_major_formatter(PercentFormatter(1.0))  # as many decimals as the ticks need
        bottom.grid(alpha=0.3)
        for ax in (top, bottom):  # the caller's axes need not share their x axis
            _frame_one_date(ax, dates)
        return fig


def _portfolio_returns(simple: pd.DataFrame, weights, period: pd.Index) -> pd.Series:
    """Daily return of the target-weight portfolio, renormalised over the assets with data."""
    assets = simple.columns
    if isinstance(weights, dict):  # {asset: weight}, read like a Series (as finvae.risk reads it)
        weights = pd.Series(weights)
    if isinstance(weights, str):
        if weights != "equal":
            raise ValueError(f"weights must be 'equal', a Series or a DataFrame; got {weights!r}.")
        w = np.full(simple.shape, 1.0 / simple.shape[1])
    elif isinstance(weights, (pd.Series, pd.DataFrame)):
        cols = weights.index if isinstance(weights, pd.Series) else weights.columns
        if cols.has_duplicates:
            raise DataError(f"weights names asset(s) {cols[cols.duplicated()].unique()[:3].tolist()} more than "
                            "once; give each asset one weight.")
        unknown, missing = cols.difference(assets), assets.difference(cols)
        if len(unknown) or len(missing):
            raise DataError(
                "weights must name the same assets as returns: "
                + (f"unknown {unknown[:3].tolist()}; " if len(unknown) else "")
                + (f"missing {missing[:3].tolist()} (give them 0 weight explicitly)." if len(missing) else "")
            )
        if isinstance(weights, pd.Series):
            w = np.broadcast_to(weights.reindex(assets).to_numpy(dtype=np.float64), simple.shape)
        else:
            if weights.index.has_duplicates:
                raise DataError("weights has duplicate dates.")
            absent = period.difference(weights.index)
            if len(absent):
                raise DataError(
                    f"weights has no row for {len(absent)} backtest date(s), e.g. {absent[:3].tolist()}; "
                    "give the weights held on every date of flags."
                )
            w = weights.reindex(index=simple.index, columns=assets).to_numpy(dtype=np.float64)
        if not np.isfinite(w[simple.index.isin(period)]).all():
            raise DataError("weights hold NaN or infinite values in the backtest period; use 0 for no position.")
    else:
        raise ValueError(f"weights must be 'equal', a Series or a DataFrame; got {type(weights).__name__}.")
    r = simple.to_numpy(dtype=np.float64, na_value=np.nan)
    seen = np.isfinite(r)
    known = np.isfinite(w).all(axis=1)  # False only before the backtest, where DataFrame weights may stop
    w = np.where(known[:, None], w, 0.0)
    gross = np.abs(w).sum(axis=1)
    gross_seen = np.where(seen, np.abs(w), 0.0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # An asset without a return that day sits out; the others are scaled up to the same gross exposure.
        out = np.where(seen, w * np.nan_to_num(r), 0.0).sum(axis=1) * gross / gross_seen
    out[~(gross_seen > 0)] = 0.0  # no data at all that day (or zero weights): no return
    out[~known] = np.nan  # no weights: left out of the volatility estimate
    return pd.Series(out, index=simple.index)


def _vol_target_exposure(portfolio: pd.Series, period: pd.Index, target: float, halflife: float) -> np.ndarray:
    """Exposure ``min(k / sigma_hat, 1)`` with ``k`` set so that its mean over ``period`` is ``target``."""
    sigma = np.sqrt(
        portfolio.pow(2).ewm(halflife=halflife, min_periods=max(int(np.ceil(halflife)), 2)).mean().shift(1)
    ).reindex(period).to_numpy()
    inverse = np.where(np.isfinite(sigma) & (sigma > 0), 1.0 / sigma, np.nan)
    known = np.isfinite(inverse)

    def exposure(k: float) -> np.ndarray:
        return np.where(known, np.minimum(k * np.nan_to_num(inverse), 1.0), 1.0)

    if target >= 1.0:
        return np.ones(len(period))
    if not known.any():
        warnings.warn(
            f"The volatility target has no volatility estimate on any of the {len(period)} backtest day(s) (its "
            f"EWMA needs {max(int(np.ceil(halflife)), 2)} earlier days): it stays fully invested. Pass returns that "
            "start before the flags, or a shorter vol_target_halflife.",
            stacklevel=3,
        )
        return np.ones(len(period))
    lowest = exposure(0.0).mean()  # days without a volatility estimate stay fully invested
    if target <= lowest:
        warnings.warn(
            f"The volatility target cannot reach an average exposure of {target:.3f}: {int((~known).sum())} "
            "early day(s) have no volatility estimate and stay fully invested.",
            stacklevel=3,
        )
        return exposure(0.0)
    k_full = 1.0 / np.nanmin(inverse[known])  # every day fully invested from here on
    k = brentq(lambda k: exposure(k).mean() - target, 0.0, k_full, xtol=1e-14)
    return exposure(k)


def _check_overlay_settings(hold, exposure_when_flagged, cost_bps) -> None:
    """Raise a ValueError that names the first of :func:`anomaly_overlay`'s settings out of range."""
    if not isinstance(hold, Integral) or isinstance(hold, bool) or hold < 1:
        raise ValueError(f"hold must be an integer ≥ 1 (days de-risked after a flag); got {hold!r}.")
    if not (isinstance(exposure_when_flagged, Real) and 0.0 <= exposure_when_flagged <= 1.0):
        raise ValueError(f"exposure_when_flagged must be in [0, 1]; got {exposure_when_flagged!r}.")
    if not (isinstance(cost_bps, Real) and np.isfinite(cost_bps) and cost_bps >= 0):
        raise ValueError(f"cost_bps must be a finite number ≥ 0; got {cost_bps!r}.")


def anomaly_overlay(
    returns: pd.DataFrame,
    flags,
    *,
    weights: str | pd.Series | pd.DataFrame = "equal",
    exposure_when_flagged: float = 0.0,
    hold: int = 5,
    cost_bps: float = 5.0,
    vol_target_halflife: float = 21.0,
    returns_kind: str = "log",
    periods_per_year: int = PERIODS_PER_YEAR,
) -> OverlayResult:
    r"""Backtest cutting a portfolio's exposure after anomaly flags, beside two baselines.

    The portfolio is rebalanced to ``weights`` every day. The overlay holds it
    at exposure :math:`p_t` and the rest in cash earning nothing:

    .. math::

        p_t = \begin{cases} e & \text{if a flag was raised on one of the days } t-h, \dots, t-1 \\
                            1 & \text{otherwise} \end{cases}
        \qquad
        R_t = p_t\, R^{\text{port}}_t - c\, |p_t - p_{t-1}|

    with :math:`e` = ``exposure_when_flagged``, :math:`h` = ``hold`` and
    :math:`c` = ``cost_bps`` / 10 000. **Timing**: a flag raised at the close
    of day ``t`` (computed from returns up to ``t``) moves the position from
    day ``t + 1`` on; the portfolio stays de-risked for ``hold`` days after the
    last flag, so ``hold`` consecutive days after an isolated flag. The trade
    happens at the close of day ``t`` and its cost is deducted from the return
    of day ``t + 1``, the first day at the new exposure. The overlay on the
    first backtest day is fully invested (no earlier flags), and no cost is
    charged for the initial purchase.

    Two baselines, on the same dates, after the same costs:

    - **buy & hold**: the portfolio at exposure 1 every day;
    - **vol target**: exposure :math:`\min(k / \hat\sigma_t, 1)`, where
      :math:`\hat\sigma_t` is the exponentially weighted volatility of the
      portfolio's daily returns with half-life ``vol_target_halflife``, from
      returns up to ``t - 1`` only (all of ``returns`` before the backtest
      warms it up; days without an estimate are fully invested). The single
      constant :math:`k` is set so that the average exposure equals the
      overlay's. That calibration uses the whole backtest period, by design:
      it makes the two comparable at equal average exposure (the day-to-day
      scaling is causal, the level is chosen ex post).

    Parameters
    ----------
    returns : DataFrame of shape (n_dates, n_assets) or Series
        Daily asset returns, sorted unique dates as index, NaN where missing.
        It may start before the flags (the earlier part only warms up the
        volatility estimate). Never modified.
    flags : Series of bool, or the DataFrame of :func:`walk_forward`
        True on dates whose close raised a flag (a DataFrame's ``"flag"``
        column is used). Its dates set the backtest period and must be a
        consecutive run of ``returns``' dates. 0/1 values are accepted.
    weights : "equal", Series or DataFrame, default="equal"
        Target weights of the portfolio: ``"equal"`` (1/N of the assets with a
        return that day), a Series indexed by asset (fixed weights), or a
        DataFrame dates × assets holding on each backtest date the weights
        held *during* that day (decide them at the previous close). Weights
        are used as given (their sum is the invested share); every asset of
        ``returns`` must be named.
    exposure_when_flagged : float in [0, 1], default=0.0
        Exposure while de-risked (0 = all cash).
    hold : int ≥ 1, default=5
        Days the portfolio stays de-risked after the last flag.
    cost_bps : float ≥ 0, default=5
        Cost in basis points per unit of turnover (``|Δ exposure|``).
    vol_target_halflife : float > 0, default=21
        Half-life in days of the volatility estimate of the baseline.
    returns_kind : {"log", "simple"}, default="log"
        What ``returns`` holds. Log returns are converted to simple returns,
        :math:`e^{r} - 1`, before any portfolio arithmetic (simple returns add
        across assets, log returns do not). Every output is in simple returns.
    periods_per_year : int, default=252
        For annualising in :meth:`OverlayResult.summary`.

    Returns
    -------
    OverlayResult
        ``.returns``, ``.positions``, ``.benchmark``, ``.vol_target``,
        ``.summary()``, ``.plot()``.

    Raises
    ------
    DataError
        Flags on dates not in ``returns`` or with gaps, flags that are not
        booleans, weights that name other assets or miss dates, bad returns.
    ValueError
        Unknown ``weights`` or ``returns_kind``, parameters out of range.

    Notes
    -----
    **Missing returns**: an asset without a return on a day (not yet listed,
    a holiday of its exchange) sits out that day; the other assets' weights
    are scaled up to the same gross exposure
    (:math:`R^{\text{port}}_t = \sum_{i \in O_t} w_i r_{i,t} \cdot
    \sum_i |w_i| / \sum_{i \in O_t} |w_i|`, :math:`O_t` the assets observed
    on ``t``). A day with no asset observed has a portfolio return of 0.

    **Costs and turnover** count changes of the exposure to the portfolio only,
    as if it were traded as one instrument (an index future, a fund); the
    daily rebalancing inside the portfolio is common to all three strategies
    and not charged.

    **No look-ahead**: the overlay's return on day ``t`` depends on returns of
    day ``t`` and flags up to ``t - 1`` only.

    Examples
    --------
    >>> wf = walk_forward(FinVAE(random_state=0, verbose=0), returns, start="2000-01-01")  # doctest: +SKIP
    >>> result = anomaly_overlay(returns, wf["flag"], hold=5, cost_bps=5)  # doctest: +SKIP
    >>> result.summary().round(2)  # doctest: +SKIP
    >>> fig = result.plot()  # doctest: +SKIP
    """
    if returns_kind not in ("log", "simple"):
        raise ValueError(f"returns_kind must be 'log' or 'simple'; got {returns_kind!r}.")
    _check_overlay_settings(hold, exposure_when_flagged, cost_bps)
    if not (isinstance(vol_target_halflife, Real) and np.isfinite(vol_target_halflife) and vol_target_halflife > 0):
        raise ValueError(f"vol_target_halflife must be a finite number of days > 0; got {vol_target_halflife!r}.")
    if not isinstance(periods_per_year, Integral) or isinstance(periods_per_year, bool) or periods_per_year < 1:
        raise ValueError(f"periods_per_year must be a positive integer; got {periods_per_year!r}.")
    returns = _returns_frame(returns)

    if isinstance(flags, pd.DataFrame):
        if "flag" not in flags.columns:
            raise DataError("flags is a DataFrame without a 'flag' column; pass the Series of flags.")
        flags = flags["flag"]
    if not isinstance(flags, pd.Series):
        raise DataError(f"flags must be a pandas Series of booleans indexed by date; got {type(flags).__name__}.")
    if len(flags) == 0:
        raise DataError("flags is empty: there is no backtest period.")
    if flags.isna().any():
        raise DataError(f"flags holds {int(flags.isna().sum())} missing value(s); give True or False on every date.")
    if not pd.api.types.is_bool_dtype(flags.dtype):
        if not ((pd.api.types.is_numeric_dtype(flags.dtype) or flags.dtype == object) and flags.isin([0, 1]).all()):
            odd = flags[~flags.isin([0, 1])].iloc[:3].tolist()
            raise DataError(f"flags must be booleans (or 0/1); got dtype {flags.dtype} with values such as {odd}. "
                            "Map them to True/False first.")
    flags = flags.astype(bool)
    rows = returns.index.get_indexer(flags.index)
    if (rows < 0).any():
        raise DataError(
            f"flags has {int((rows < 0).sum())} date(s) that are not in returns, e.g. "
            f"{flags.index[rows < 0][:3].tolist()}. Align flags to the returns' dates."
        )
    if len(rows) > 1 and not (np.diff(rows) == 1).all():
        raise DataError(
            "flags dates must be a consecutive run of the returns' dates (sorted, no gaps), so that each "
            "flag acts on the next trading day; reindex flags on returns.index[start:end] with fill_value=False."
        )
    period = returns.index[rows]  # the returns' own dates, whatever labels flags matched them with
    flags = pd.Series(flags.to_numpy(), index=period, name=flags.name)
    found = rows_per_year(returns.index)
    if abs(found / periods_per_year - 1) > 0.25:  # rows_per_year's own band around 252
        warn_caller(f"returns hold about {found} rows a year, and the summary annualises with periods_per_year="
                    f"{periods_per_year}: its annual return, volatility, Sharpe and Calmar would be off. Pass "
                    f"periods_per_year={found}. (hold, like FinVAE's window and half-lives, counts rows.)")

    simple = np.expm1(returns) if returns_kind == "log" else returns
    simple = simple.iloc[: rows[-1] + 1]  # nothing after the backtest is used
    portfolio_all = _portfolio_returns(simple, weights, period)
    portfolio = portfolio_all.loc[period]

    # De-risked on t if a flag was raised on any of the days t-hold .. t-1 (within the backtest).
    raised = np.concatenate([[0], np.cumsum(flags.to_numpy(dtype=np.int64))])
    t = np.arange(len(period))
    derisked = raised[t] - raised[np.maximum(t - hold, 0)] > 0
    position = np.where(derisked, float(exposure_when_flagged), 1.0)
    cost = cost_bps / 1e4

    def after_costs(exposure: np.ndarray, name: str) -> pd.Series:
        turnover = np.abs(np.diff(exposure, prepend=exposure[0]))
        return pd.Series(exposure * portfolio.to_numpy() - cost * turnover, index=period, name=name)

    vol_exposure = _vol_target_exposure(portfolio_all, period, float(position.mean()), vol_target_halflife)
    return OverlayResult(
        returns=after_costs(position, "finvae_overlay"),
        positions=pd.Series(position, index=period, name="exposure"),
        benchmark=pd.Series(portfolio.to_numpy(), index=period, name="buy_and_hold"),
        vol_target=after_costs(vol_exposure, "vol_target"),
        vol_target_positions=pd.Series(vol_exposure, index=period, name="vol_target_exposure"),
        flags=flags.rename("flag"),
        cost_bps=float(cost_bps),
        periods_per_year=int(periods_per_year),
    )
