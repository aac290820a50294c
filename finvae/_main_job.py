"""The main job: walk-forward FinVAE on a panel of returns, risk factors, an anomaly-flag backtest, figures.

``finvae run`` and ``examples/sp500_anomaly_backtest.py`` both call
:func:`run_main_job`; this module holds the one implementation.
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path

import numpy as np
import pandas as pd

from finvae._atomic import atomic_path, remove_leftovers, write_csv
from finvae._checkpoint import fit_or_load, writable_folder
from finvae._cluster import check_scheduler, dask_backend
from finvae._exceptions import DataError
from finvae._validation import as_date_of, day_label
from finvae.backtest import (
    OverlayResult,
    _check_overlay_settings,
    _returns_frame,
    anomaly_overlay,
    rows_per_year,
    walk_forward,
)
from finvae.estimator import SCORE_PARTS, FinVAE
from finvae.factors import exposures
from finvae.report import PERCENT_MEASURES, REPORT_NAME, write_report
from finvae.scoring import threshold

__all__ = ["MainJobResult", "MarketShockVAE", "format_summary", "run_main_job"]

#: The overlay's settings, and why (docs/main_job.md has every setting tried, and how it did):
#: - ``signal="score"``: FinVAE's own score and threshold, the flags of ``FinVAE.predict`` (one
#:   signal). Its market part puts market-wide shocks at the top (benchmarks/events_bench.py);
#:   ``"market"`` flags on that part alone, ignoring single-stock jumps;
#: - ``vol_halflife=None``: FinVAE's default volatility (the larger of a 5-day and a 60-day EWMA);
#: - ``hold=63``: a quarter in which repeated flags keep the portfolio de-risked through a crisis;
#: - ``exposure_when_flagged=0.5``: half, so that the sharp rebounds inside a crisis are not all missed;
#: - the threshold flags 1 % of training days (FinVAE's default ``contamination``).
#: The hold and the exposure were chosen on the same 2000-2022 history the README reports (an
#: in-sample choice, when the job flagged on the KL part against a 90-day volatility); holds of 63,
#: 84 and 126 days all met the drawdown goal then, with seeds 0 and 1.
SIGNALS = ("score", "market")
DEFAULT_SIGNAL = "score"
DEFAULT_VOL_HALFLIFE = None
DEFAULT_HOLD = 63
DEFAULT_EXPOSURE_WHEN_FLAGGED = 0.5
DEFAULT_COST_BPS = 5.0

FIGURES = {
    "scores": "scores.png",
    "factors": "factors.png",
    "equity": "equity_drawdowns.png",
    "contributions": "asset_contributions.png",
}


class MarketShockVAE(FinVAE):
    """FinVAE whose score is the market-wide part of its anomaly score only.

    :meth:`score` returns the ``"market"`` column of :meth:`FinVAE.score_parts`:
    how surprising the day's latent factors and equal-weight move are under
    the training distribution, in nats (large on market-wide shocks), without the
    single-asset and cross-section parts, which a whole-portfolio overlay
    barely feels. ``threshold_`` (and so :meth:`predict`) is the
    ``1 - contamination`` quantile of this score on the training dates.
    Everything else is FinVAE's.
    """

    def fit(self, X, y=None) -> MarketShockVAE:
        super().fit(X)
        self.threshold_ = threshold(np.asarray(self.score(X), dtype=np.float64), self.contamination)
        return self

    def score(self, X, y=None):
        parts = self.score_parts(X)
        if isinstance(parts, pd.DataFrame):
            return parts["market"].rename("score")
        return parts[:, SCORE_PARTS.index("market")]


@dataclass(frozen=True)
class MainJobResult:
    """What :func:`run_main_job` computed and where it wrote it.

    Attributes
    ----------
    walk_forward : DataFrame
        Out-of-sample ``score``, ``flag``, ``threshold`` and ``refit_date`` per
        scored date (:func:`finvae.backtest.walk_forward`).
    factors : DataFrame
        Latent factors per date from the reference model (fitted on the
        returns before the first scored date only).
    exposures : DataFrame
        Each asset's betas to the factors and R², over the scored dates.
    overlay : OverlayResult
        The backtest of de-risking on the flags, with its two baselines.
    summary : DataFrame
        ``overlay.summary()``: one row per measure, one column per strategy.
    model : FinVAE
        The reference model.
    files : list of Path
        Files written, in ``out_dir``.
    seconds : float
        Wall-clock time of the job.
    """

    walk_forward: pd.DataFrame
    factors: pd.DataFrame
    exposures: pd.DataFrame
    overlay: OverlayResult
    summary: pd.DataFrame
    model: FinVAE
    files: list[Path] = field(default_factory=list)
    seconds: float = float("nan")

    def __repr__(self) -> str:
        """A summary, not the tables: what was scored and flagged, and where the files are."""
        wf = self.walk_forward
        span = f"{day_label(wf.index[0])} to {day_label(wf.index[-1])}, " if len(wf) else ""
        folder = f" in {Path(self.files[0]).parent}" if self.files else ""
        return (f"MainJobResult({span}{len(wf):,} dates scored out of sample, {int(wf['flag'].sum()):,} flagged; "
                f"{len(self.files)} files{folder}; {self.overlay!r})")


def run_main_job(
    returns: pd.DataFrame,
    *,
    out_dir: str | Path = "finvae-output",
    start="2000-01-01",
    window: int = 20,
    latent_dim: int = 3,
    epochs: int = 60,
    refit_every: int = 126,
    min_train: int = 756,
    n_jobs: int | None = 2,
    random_state: int | None = 0,
    signal: str = DEFAULT_SIGNAL,
    vol_halflife: float | tuple[float, float] | None = DEFAULT_VOL_HALFLIFE,
    hold: int = DEFAULT_HOLD,
    exposure_when_flagged: float = DEFAULT_EXPOSURE_WHEN_FLAGGED,
    cost_bps: float = DEFAULT_COST_BPS,
    figures: bool = True,
    verbose: int = 1,
    scheduler: str | None = None,
    checkpoint_dir: str | Path | None = None,
    source: str | None = None,
) -> MainJobResult:
    """Walk FinVAE forward, read its factors, backtest its flags, and write tables and figures.

    1. **Reference model**: a :class:`~finvae.FinVAE` fitted on the returns
       before the first scored date only. Its latent means are the risk
       factors (``factors.csv``): one model, so one set of axes over the whole
       period, and out of sample from the first scored date on. Each asset's
       exposures to them are estimated over the scored dates
       (``exposures.csv``, :func:`finvae.factors.exposures`).
    2. **Walk-forward**: a fresh FinVAE (by default its whole score, the
       flags of :meth:`FinVAE.predict`: ``signal``, ``vol_halflife``) refitted
       every ``refit_every`` days on all returns before its block (expanding
       window) scores the block out of sample (``scores.csv``, ``flags.csv``,
       :func:`finvae.backtest.walk_forward`).
    3. **Backtest**: the equal-weight portfolio, de-risked to
       ``exposure_when_flagged`` for ``hold`` days after each flag (a flag at
       the close of day t acts from t + 1), after ``cost_bps`` costs, beside
       buy and hold and a volatility target at the same average exposure
       (``summary.csv``, ``backtest.csv``,
       :func:`finvae.backtest.anomaly_overlay`).
    4. **Figures** (PNG): the score with its threshold and flags over the
       equal-weight index; the factors; equity curves and drawdowns; per-asset
       contributions on the ten most anomalous scored days (shares of the
       reference model's residual, :meth:`finvae.FinVAE.score_assets`).
    5. **Report**: ``report.html``, all of the above on one self-contained
       page, with the flagged dates' top assets, the settings and the
       package versions (:func:`finvae.report.write_report`), written last.

    Parameters
    ----------
    returns : DataFrame of shape (n_dates, n_assets)
        Daily log returns, sorted unique dates as index, NaN where missing
        (e.g. ``prices_to_returns(load_sp500_sample())``). Never modified.
    out_dir : str or Path, default="finvae-output"
        Folder for the files; created if missing, files in it overwritten.
    start : date-like or None, default="2000-01-01"
        First scored date (and first backtest date). Scoring starts no earlier
        than ``min_train`` rows into ``returns``; None: at that row. A date without
        a time zone is read in the returns' own.
    window, latent_dim, epochs : int
        FinVAE's window length, number of factors, and most training epochs.
    refit_every : int, default=126
        Trading days between refits (126: twice a year, which keeps the
        default run on the sample within a few minutes on two cores; 63,
        quarterly, doubles the time).
    min_train : int, default=756
        Fewest training rows for the first fit (three years).
    n_jobs : int or None, default=2
        Refits run in parallel (FinVAE trains on one thread each).
    random_state : int or None, default=0
        Seed of every FinVAE fit.
    signal : {"score", "market"}, default="score"
        What the walk-forward flags on: ``"score"``, FinVAE's anomaly score
        (:meth:`FinVAE.predict`'s flags), or ``"market"``, its market part
        only (:class:`MarketShockVAE`), which ignores single-stock jumps and
        broken cross-sections. Either way a date is flagged when its value
        exceeds the 99th percentile of the training dates' values
        (``contamination=0.01``).
    vol_halflife : float, pair of floats or None, default=None
        The walk-forward models' ``vol_halflife`` (the trailing volatility
        they measure surprise against); None keeps FinVAE's default, the
        larger of a 5-day and a 60-day EWMA. The reference model, for the
        factors and contributions, always keeps the default.
    hold, exposure_when_flagged, cost_bps
        Overlay settings (see :func:`finvae.backtest.anomaly_overlay`).
    figures : bool, default=True
        Draw and save the PNG figures.
    verbose : int, default=1
        0: silent; 1: status lines on stderr and a progress bar over refits.
    scheduler : str or None, default=None
        Address of a running Dask scheduler (``"tcp://host:8786"``): the
        walk-forward's refits run on its workers (``n_jobs`` is then theirs).
        Needs ``pip install "finvae[dask]"``. None: on this machine.
    checkpoint_dir : str, Path or None, default=None
        Folder where the reference model (a model folder, safetensors +
        JSON) and each of the walk-forward's finished refits are saved, and
        from which a re-run resumes: it loads them instead of fitting again
        (``walk_forward``'s ``checkpoint_dir``).
    source : str or None, default=None
        Where ``returns`` came from (a file, tickers, the bundled sample), shown
        first in the report's settings; None: not recorded there.

    Returns
    -------
    MainJobResult

    Raises
    ------
    DataError
        Returns that are not a valid panel, or too short to train before ``start``.
    """
    if signal not in SIGNALS:
        raise ValueError(f"signal must be one of {SIGNALS}; got {signal!r}.")
    # Checked here, not minutes later when the backtest or a refit would find them.
    if vol_halflife is not None:
        FinVAE(vol_halflife=vol_halflife)._vol_halflives()  # raises ValueError on a bad value
    _check_overlay_settings(hold, exposure_when_flagged, cost_bps)
    for name, value in (("refit_every", refit_every), ("min_train", min_train)):
        if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer ≥ 1; got {value!r}.")
    if scheduler is not None:
        check_scheduler(scheduler)  # a missing dask or a wrong address is reported now, not after minutes of work
    began = time.perf_counter()
    returns = _returns_frame(returns)
    if not isinstance(returns.index, pd.DatetimeIndex):
        raise DataError("returns must be indexed by date (a DatetimeIndex); e.g. load it with load_returns.")
    out = writable_folder(out_dir, "output folder")  # now, not after the walk-forward
    if checkpoint_dir is not None:
        writable_folder(checkpoint_dir)  # now, not after the first fit

    def say(message: str) -> None:
        if verbose:
            print(f"[{time.perf_counter() - began:6.1f}s] {message}", file=sys.stderr, flush=True)

    first = int(min_train)  # start=None: as early as min_train allows
    if start is not None:
        asked = int(returns.index.searchsorted(as_date_of(returns.index, start, "start"), side="left"))
        if asked < first < len(returns):
            warnings.warn(f"scoring starts at {returns.index[first].date()}, not at start={start}: the first fit "
                          f"needs min_train={min_train} days of training before it.", UserWarning, stacklevel=2)
        first = max(first, asked)
    if first >= len(returns):
        raise DataError(
            f"Nothing to score: returns has {len(returns)} dates ({returns.index[0].date()} to "
            f"{returns.index[-1].date()}), and scoring starts at row {first} (start={start}, min_train={min_train}). "
            "Pass a longer history, an earlier start, or a smaller min_train (--min-train)."
        )
    train, scored = returns.iloc[:first], returns.index[first:]
    unseen = train.columns[train.isna().all().to_numpy()]
    if len(unseen) and len(unseen) < returns.shape[1]:  # a late listing: no history to learn it from yet
        firsts = ", ".join(f"{c} from {returns[c].first_valid_index().date()}" if returns[c].notna().any()
                           else f"{c} never" for c in unseen[:5])
        raise DataError(
            f"{len(unseen)} asset(s) have no returns before the walk-forward starts on {scored[0].date()}, so no "
            f"model can learn them: {firsts}{' ...' if len(unseen) > 5 else ''}. Pass a --start (start=) at "
            "least a few years after their first price, or leave them out."
        )
    say(f"{returns.shape[1]} assets, {len(returns):,} days; training before {scored[0].date()} "
        f"({len(train):,} days), scoring {scored[0].date()} to {scored[-1].date()} ({len(scored):,} days).")

    params = dict(window=window, latent_dim=latent_dim, epochs=epochs, random_state=random_state, verbose=0)
    signal_params = params if vol_halflife is None else dict(params, vol_halflife=vol_halflife)
    estimator = MarketShockVAE(**signal_params) if signal == "market" else FinVAE(**signal_params)
    if checkpoint_dir is None:
        say("Fitting the reference model (factors and per-asset contributions)...")
        model = FinVAE(**params).fit(train)
    else:
        model, reused = fit_or_load(checkpoint_dir, FinVAE(**params), train)
        say(f"{'Loaded' if reused else 'Fitted and saved'} the reference model (factors and per-asset "
            f"contributions) in {checkpoint_dir}.")
    factors = model.transform(returns)
    shares = model.score_assets(returns)
    betas = exposures(returns.loc[scored], factors.loc[scored])

    n_refits = -(-len(scored) // refit_every)
    say(f"Walk-forward: {n_refits} refits, every {refit_every} days, expanding window, n_jobs={n_jobs}, "
        f"flagging on the {'market part of the score' if signal == 'market' else 'anomaly score'}...")
    with contextlib.nullcontext() if scheduler is None else dask_backend(scheduler):
        wf = walk_forward(estimator, returns, refit_every=refit_every, min_train=min_train, start=scored[0],
                          n_jobs=n_jobs, verbose=verbose, checkpoint_dir=checkpoint_dir)
    if wf["score"].isna().all():
        raise DataError(
            f"no date from {day_label(wf.index[0])} to {day_label(wf.index[-1])} was scored: on every one, fewer "
            f"than the model's min_coverage ({estimator.min_coverage:.0%}) of the assets have a return (sparse "
            "listings?), so there is nothing to flag and the backtest would be buy and hold. Drop the assets that "
            "trade on few dates.")
    say(f"{int(wf['flag'].sum())} flagged days of {len(wf):,} ({wf['flag'].mean():.1%}). Backtesting the overlay...")
    overlay = anomaly_overlay(returns, wf["flag"], hold=hold, exposure_when_flagged=exposure_when_flagged,
                              cost_bps=cost_bps, periods_per_year=rows_per_year(returns.index))
    summary = overlay.summary()

    # report.html is written last: removed first, a folder without it holds a run that did not finish
    # (a run killed while writing would otherwise leave an earlier run's report beside these tables).
    (out / REPORT_NAME).unlink(missing_ok=True)
    files = [
        _write(factors, out / "factors.csv"),
        _write(wf[["score", "threshold", "refit_date"]], out / "scores.csv"),
        _write(pd.DataFrame({"flag": wf["flag"], "exposure": overlay.positions}), out / "flags.csv"),
        _write(betas, out / "exposures.csv", index_label="asset"),
        _write(summary, out / "summary.csv", index_label="measure"),
        _write(pd.DataFrame({"overlay": overlay.returns, "buy_and_hold": overlay.benchmark,
                             "vol_target": overlay.vol_target}), out / "backtest.csv"),
    ]
    if figures:
        say("Drawing figures...")
        files += _draw(out, returns, wf, factors.loc[scored], shares.loc[scored], overlay, signal)
    seconds = time.perf_counter() - began
    result = MainJobResult(walk_forward=wf, factors=factors, exposures=betas, overlay=overlay, summary=summary,
                           model=model, files=files, seconds=seconds)
    settings = dict({} if source is None else {"data": source},
                    returns=f"{returns.index[0].date()} to {returns.index[-1].date()}, {len(returns):,} dates, "
                            f"{returns.shape[1]} assets",
                    start=str(scored[0].date()), window=window, latent_dim=latent_dim, epochs=epochs,
                    refit_every=refit_every,
                    min_train=min_train, n_jobs=n_jobs, random_state=random_state, signal=signal,
                    vol_halflife=estimator.vol_halflife,  # the half-lives used, the default's too
                    hold=hold, exposure_when_flagged=exposure_when_flagged,
                    cost_bps=cost_bps, figures=figures)
    files.append(write_report(result, out, settings, contributions=shares.loc[scored]))  # report.html, last
    remove_leftovers(out, [path.name for path in files])  # temporary files of an earlier run that was killed
    for name in set(FIGURES.values()) - {path.name for path in files}:  # an earlier run's figure, not redrawn
        (out / name).unlink(missing_ok=True)
    say(f"Done. Wrote {len(files)} files to {out}/.")
    return result


def _write(frame: pd.DataFrame, path: Path, index_label: str = "Date") -> Path:
    return write_csv(frame, path, index_label=index_label)


def _draw(out: Path, returns: pd.DataFrame, wf: pd.DataFrame, factors: pd.DataFrame, shares: pd.DataFrame,
          overlay: OverlayResult, signal: str) -> list[Path]:
    import matplotlib.pyplot as plt  # the caller's backend (a notebook's inline one stays); `finvae run` uses Agg

    from finvae.plotting import equal_weight_index, plot_asset_contributions, plot_factors, plot_scores

    index = equal_weight_index(returns.loc[wf.index])
    what = "market part of the score" if signal == "market" else "anomaly score"
    drawn = {
        "scores": plot_scores(wf["score"], wf["threshold"], wf["flag"], index,
                              title=f"Walk-forward FinVAE {what}, out of sample: threshold and flagged dates, "
                                    "over the equal-weight index",
                              score_label=what),
        "factors": plot_factors(factors, title="FinVAE latent factors (reference model fitted before "
                                               f"{factors.index[0].date()}; out of sample)"),
        "equity": overlay.plot(),
        "contributions": plot_asset_contributions(
            shares, wf["score"], top=10,
            title=f"Per-asset contributions (shares of the residual) on the 10 days with the highest {what}"),
    }
    paths = []
    for name, fig in drawn.items():
        path = out / FIGURES[name]
        with atomic_path(path) as temporary:
            fig.savefig(temporary, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def format_summary(summary: pd.DataFrame) -> str:
    """The summary table as text: percentages for returns, drawdowns and shares, two decimals for ratios."""
    rows = {
        measure: ["n/a" if pd.isna(v) else f"{v:.1%}" if measure in PERCENT_MEASURES else f"{v:.2f}" for v in values]
        for measure, values in summary.iterrows()
    }
    table = pd.DataFrame.from_dict(rows, orient="index", columns=summary.columns)
    header = ""
    if {"start", "end", "cost_bps"} <= summary.attrs.keys():
        a = summary.attrs
        header = f"Backtest {a['start'].date()} to {a['end'].date()}, after costs of {a['cost_bps']:g} bps:\n"
    return header + table.to_string()

