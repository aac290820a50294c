"""Planted-anomaly benchmark: average precision of FinVAE's day scores beside classical detectors.

Run ``python benchmarks/anomaly_bench.py`` (about a minute on 2 busy cores);
``--seeds 1 2 3`` averages over three plantings, ``--pyod`` adds PyOD's VAE,
``--params '{"window": 40}'`` passes keyword arguments to FinVAE. Variants that
check robustness rather than one setting: ``--assets 10`` (the first ten stocks
only), ``--split 2007-12-31`` (a test period that holds 2008), ``--sizes 6 3 2``
(weaker anomalies: idio, market and dispersion sizes in ``sd``).

**Data.** Daily log returns of the bundled sample (20 S&P 500 stocks,
1990-2022, :func:`finvae.datasets.load_sp500_sample`). Dates up to ``--split``
(2012-12-31) are the training period, later dates the test period.

**Planting.** On ``n_per_kind`` random test days per kind (60 days in all,
never in the first ``warmup`` test days and at least ``exclude_after + 1``
days apart, so that no planted day sits in another's aftermath), one of three
anomalies is put into the *real* returns, each sized by the assets' training
standard deviation ``sd`` and mean ``mu``:

- ``idio``: one asset, drawn at random, jumps up by ``idio_sigma`` (8) of its ``sd``;
- ``market``: every asset falls by ``market_sigma`` (4) of its ``sd`` on the same day;
- ``dispersion``: the day's cross-section is replaced by ``mu ± dispersion_sigma * sd``
  (3), half the assets up and half down, so an equal-weight index barely moves
  while the cross-section breaks.

**Evaluation.** Each detector is fitted on the training period only (no
planted day in it) and scores every test day from returns up to and
including that day. A planted day is a positive, every other test day a
negative, except the ``exclude_after`` (20) days right after a planted day:
a shock legitimately lifts trailing volatilities and the scores of the days
that follow, and those days are neither anomalies nor fair negatives, so
they are left out, for every detector alike. The figure is average precision
(AP, :func:`sklearn.metrics.average_precision_score`) over all kinds, and per
kind (that kind's planted days against the same negatives). A test day
without a score is an error, not a silent drop.

**Detectors.**

- ``max_abs_z``: the largest absolute z-score of the day, each return divided
  by its asset's trailing volatility (RiskMetrics EWMA of squared returns,
  half-life 20 days, known at the previous close);
- ``pca3_residual``: squared residual of those z-scores after a 3-factor PCA
  fitted on the training period;
- ``mahalanobis``: Mahalanobis distance of the z-scores under a Ledoit-Wolf
  covariance fitted on the training period;
- ``pyod_vae`` (``--pyod``): PyOD's VAE on flattened 20-day windows of returns
  standardised with the training mean and standard deviation (the usual way
  to put a generic detector on time series), 30 epochs, one torch thread;
- ``finvae``: :class:`finvae.FinVAE` with default parameters (``random_state``
  from ``--random-state``, 0 by default), :meth:`~finvae.FinVAE.score`.

The training period is the same for every planting (anomalies go into the
test period only), so each detector is fitted once and scores every planting.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA
from sklearn.metrics import average_precision_score

from finvae.datasets import load_sp500_sample, prices_to_returns
from finvae.training import torch_threads

KINDS = ("idio", "market", "dispersion")

#: A detector: fitted on the training returns, it gives back a function scoring any returns.
Scorer = Callable[[pd.DataFrame], pd.Series]
Detector = Callable[[pd.DataFrame], Scorer]


@dataclass(frozen=True)
class Design:
    """How anomalies are planted and judged (see the module docstring)."""

    split: str = "2012-12-31"
    n_per_kind: int = 20
    idio_sigma: float = 8.0
    market_sigma: float = 4.0
    dispersion_sigma: float = 3.0
    exclude_after: int = 20
    warmup: int = 60


@dataclass
class Planting:
    """Returns with anomalies planted in the test period, and where they are."""

    returns: pd.DataFrame
    days: pd.DatetimeIndex
    kinds: np.ndarray


def sample_returns(start: str | None = None, end: str | None = None, assets: int | None = None) -> pd.DataFrame:
    """Daily log returns of the bundled sample, optionally cut to dates and to the first ``assets`` columns."""
    # RRC's stale early-1990s quotes are known; the stale-price warning is meant for new data.
    returns = prices_to_returns(load_sp500_sample(), stale_days=None).loc[start:end]
    return returns.iloc[:, :assets] if assets else returns


def spaced_days(n_days: int, n: int, gap: int, warmup: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random positions in ``range(warmup, n_days)``, sorted, each more than ``gap`` from the others."""
    blocked = np.zeros(n_days, bool)
    blocked[:warmup] = True
    chosen: list[int] = []
    for pos in rng.permutation(n_days):
        if blocked[pos]:
            continue
        chosen.append(int(pos))
        blocked[max(0, pos - gap) : pos + gap + 1] = True
        if len(chosen) == n:
            return np.sort(np.array(chosen))
    raise ValueError(
        f"the test period ({n_days} days) has no room for {n} planted days {gap} days apart; pass an earlier --split."
    )


def plant(returns: pd.DataFrame, design: Design, seed: int) -> Planting:
    """Plant ``design.n_per_kind`` anomalies of each kind on random test days (see the module docstring)."""
    rng = np.random.default_rng(seed)
    train = returns.loc[: design.split]
    mu, sd = train.mean().to_numpy(), train.std().to_numpy()
    first_test = len(train)
    n = design.n_per_kind * len(KINDS)
    days = first_test + spaced_days(len(returns) - first_test, n, design.exclude_after, design.warmup, rng)
    kinds = rng.permutation(np.repeat(KINDS, design.n_per_kind))

    values = returns.to_numpy(copy=True)
    n_assets = values.shape[1]
    for day, kind in zip(days, kinds, strict=True):
        if kind == "idio":
            asset = rng.integers(n_assets)
            values[day, asset] += design.idio_sigma * sd[asset]
        elif kind == "market":
            values[day] -= design.market_sigma * sd
        else:
            up = rng.permutation(n_assets) < n_assets // 2
            values[day] = mu + design.dispersion_sigma * np.where(up, 1.0, -1.0) * sd
    planted = pd.DataFrame(values, index=returns.index, columns=returns.columns)
    return Planting(planted, returns.index[days], kinds)


def average_precision(scores: pd.Series, planting: Planting, design: Design) -> dict[str, float]:
    """AP over the test period, overall and per kind, with each planted day's aftermath left out."""
    test = scores.loc[scores.index > pd.Timestamp(design.split)]
    if test.isna().any():
        raise ValueError(f"{int(test.isna().sum())} test day(s) have no score; every test day must be scored.")
    positions = test.index.get_indexer(planting.days)
    if (positions < 0).any():
        raise ValueError("a planted day is missing from the scores' index.")
    positive = np.zeros(len(test), bool)
    positive[positions] = True
    aftermath = np.zeros(len(test), bool)
    for pos in positions:
        aftermath[pos + 1 : pos + 1 + design.exclude_after] = True
    negative = ~positive & ~aftermath
    values = test.to_numpy()

    result = {"all": float(average_precision_score(positive[~aftermath], values[~aftermath]))}
    for kind in KINDS:
        own = np.zeros(len(test), bool)
        own[positions[planting.kinds == kind]] = True
        keep = own | negative
        result[kind] = float(average_precision_score(own[keep], values[keep]))
    return result


# --------------------------------------------------------------------------- detectors


def trailing_z(returns: pd.DataFrame, halflife: float = 20.0) -> pd.DataFrame:
    """Each return over its asset's trailing volatility known at the previous close; 0 where unknown.

    RiskMetrics style: the square root of an EWMA of squared returns (no
    demeaning: daily means are negligible beside daily volatility), shifted by
    one day so that a shock does not shrink its own z-score.
    """
    vol = np.sqrt((returns**2).ewm(halflife=halflife, min_periods=20).mean()).shift(1)
    z = returns / vol.clip(lower=1e-4)  # stale prices: a floor, not a division by zero
    return z.replace([np.inf, -np.inf], np.nan).fillna(0.0)


def max_abs_z(train: pd.DataFrame) -> Scorer:
    """Nothing to fit: the day's largest absolute z-score."""
    return lambda returns: trailing_z(returns).abs().max(axis=1)


def pca_residual(train: pd.DataFrame, k: int = 3) -> Scorer:
    """Squared residual of the day's z-scores outside a ``k``-factor PCA of the training z-scores."""
    # The first weeks' volatility estimates rest on few days: leave them out of the fit.
    pca = PCA(k).fit(trailing_z(train).iloc[60:].to_numpy())

    def score(returns: pd.DataFrame) -> pd.Series:
        z = trailing_z(returns).to_numpy()
        residual = z - pca.inverse_transform(pca.transform(z))
        return pd.Series((residual**2).sum(axis=1), index=returns.index)

    return score


def mahalanobis(train: pd.DataFrame) -> Scorer:
    """Mahalanobis distance of the day's z-scores under a shrunk training covariance."""
    cov = LedoitWolf().fit(trailing_z(train).iloc[60:].to_numpy())
    return lambda returns: pd.Series(cov.mahalanobis(trailing_z(returns).to_numpy()), index=returns.index)


def pyod_vae(train: pd.DataFrame, window: int = 20, epochs: int = 30, seed: int = 0) -> Scorer:
    """PyOD's VAE on flattened windows of globally standardised returns; a date's score is its window's."""
    from pyod.models.vae import VAE

    mu, sd = train.mean(), train.std()

    def flat_windows(returns: pd.DataFrame) -> np.ndarray:
        z = ((returns - mu) / sd).to_numpy(np.float32)
        return np.lib.stride_tricks.sliding_window_view(z, window, axis=0).reshape(len(z) - window + 1, -1)

    # One torch thread, like FinVAE's own fit: on a shared machine two threads of a small network can
    # run a hundred times slower than one when the other core is busy (threads waiting on each other).
    with torch_threads(1):
        model = VAE(verbose=0, latent_dim=3, epoch_num=epochs, random_state=seed).fit(flat_windows(train))

    def score(returns: pd.DataFrame) -> pd.Series:
        scores = np.full(len(returns), np.nan)
        with torch_threads(1):
            scores[window - 1 :] = model.decision_function(flat_windows(returns))
        return pd.Series(scores, index=returns.index)

    return score


def finvae(train: pd.DataFrame, params: dict | None = None) -> Scorer:
    """FinVAE fitted on the training returns; its per-date :meth:`~finvae.FinVAE.score`."""
    from finvae import FinVAE

    model = FinVAE(**{"verbose": 0, **(params or {})}).fit(train)
    return model.score


# --------------------------------------------------------------------------- the run


def _row(name: str, result: dict[str, float], extra: str = "") -> str:
    return f"{name:16s} {result['all']:6.3f} " + " ".join(f"{result[k]:10.3f}" for k in KINDS) + extra


def _header(last: str = "") -> str:
    return f"{'detector':16s} {'AP':>6s} " + " ".join(f"{k:>10s}" for k in KINDS) + last


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="planting seeds (default: 1)")
    parser.add_argument("--params", default="{}", help="JSON keyword arguments for FinVAE, e.g. '{\"window\": 40}'")
    parser.add_argument("--random-state", type=int, default=0, help="FinVAE's random_state (default 0)")
    parser.add_argument("--split", default=Design.split, help="last training date (default %(default)s)")
    parser.add_argument("--assets", type=int, help="the first N stocks of the sample only (default: all 20)")
    parser.add_argument("--sizes", type=float, nargs=3, metavar=("IDIO", "MARKET", "DISPERSION"),
                        help="anomaly sizes in training standard deviations (default: 8 4 3)")
    parser.add_argument("--no-finvae", action="store_true", help="classical baselines only")
    parser.add_argument("--pyod", action="store_true", help="add PyOD's VAE on flattened windows (slow)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke-test size: 6 assets, 2006-2016, 5 plantings per kind, FinVAE 2 epochs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark; print one table per seed and, with several seeds, their mean and minimum.

    Returns
    -------
    dict
        ``"per_seed"``: {seed: {detector: {"all", "idio", "market", "dispersion": AP}}};
        ``"mean"`` and ``"min"``: {detector: {...}} over the seeds;
        ``"fit_seconds"``: {detector: seconds to fit}.
    """
    args = parse_args(argv)
    params = {"random_state": args.random_state, **json.loads(args.params)}
    design = Design(split=args.split)
    if args.sizes:
        design = replace(design, idio_sigma=args.sizes[0], market_sigma=args.sizes[1],
                         dispersion_sigma=args.sizes[2])
    if args.quick:
        design = replace(design, n_per_kind=5)
        params.setdefault("epochs", 2)
        returns = sample_returns("2006-01-01", "2016-12-31", assets=6)
    else:
        returns = sample_returns(assets=args.assets)
    train = returns.loc[: design.split]

    detectors: dict[str, Detector] = {"max_abs_z": max_abs_z, "pca3_residual": pca_residual,
                                      "mahalanobis": mahalanobis}
    if args.pyod:
        detectors["pyod_vae"] = lambda t: pyod_vae(t, epochs=2 if args.quick else 30)
    if not args.no_finvae:
        detectors["finvae"] = lambda t: finvae(t, params)

    print(f"{returns.shape[1]} stocks, train {train.index[0].date()} .. {train.index[-1].date()} "
          f"({len(train)} days), test to {returns.index[-1].date()} ({len(returns) - len(train)} days); "
          f"{design.n_per_kind} planted days per kind, {design.exclude_after} days after each left out; sizes "
          f"{design.idio_sigma:g} / {design.market_sigma:g} / {design.dispersion_sigma:g} sd")
    if "finvae" in detectors:
        print(f"FinVAE parameters: {params}")

    scorers, fit_seconds = {}, {}
    for name, detector in detectors.items():
        start = time.perf_counter()
        scorers[name] = detector(train)
        fit_seconds[name] = time.perf_counter() - start

    per_seed: dict[int, dict[str, dict[str, float]]] = {}
    for seed in args.seeds:
        planting = plant(returns, design, seed)
        per_seed[seed] = {name: average_precision(score(planting.returns), planting, design)
                          for name, score in scorers.items()}
        print(f"\nseed {seed}\n" + _header("  fit s"))
        for name, result in per_seed[seed].items():
            print(_row(name, result, f"  {fit_seconds[name]:5.1f}"))

    columns = ("all", *KINDS)
    mean = {name: {c: float(np.mean([per_seed[s][name][c] for s in args.seeds])) for c in columns}
            for name in scorers}
    least = {name: {c: float(np.min([per_seed[s][name][c] for s in args.seeds])) for c in columns}
             for name in scorers}
    if len(args.seeds) > 1:
        for label, table in (("mean", mean), ("min", least)):
            print(f"\n{label} over seeds {' '.join(map(str, args.seeds))}\n" + _header())
            for name, result in table.items():
                print(_row(name, result))
    return {"per_seed": per_seed, "mean": mean, "min": least, "fit_seconds": fit_seconds}


if __name__ == "__main__":
    main()
