"""Real market-stress events: does a day score rank the days history remembers?

Run ``python benchmarks/events_bench.py`` (under a minute on 2 cores);
``--figure docs/events.png`` also draws the equal-weight index with the events
and the flagged days; ``--splits`` and ``--random-states`` change the protocol;
``--quick`` runs a toy size for the tests.

**Events.** ``benchmarks/data/stress_events.csv``: dated public market-stress
events 1990-2022, each with its kind (``market``: a crash, a crisis day, a
flash crash, a central-bank or geopolitical shock; ``single``: news about one of
the bundled stocks, named in ``ticker``), a one-line description and a public
source (a Wikipedia article title, a Federal Reserve press release, an SEC/CFTC
report, a newspaper headline with its date). Dates are the first trading day
on which the news could move closing prices (e.g. 2001-09-17 for September 11).
The bench checks every row against the bundled data before it counts it: the
date must be a trading day, and the day or the next must show a large move
(the equal-weight index by at least ``MARKET_MOVE`` for a market-wide event,
the named stock by at least ``SINGLE_MOVE`` for a single-asset one); a row that
fails is reported and left out.

**Protocol.** For each split date (2005-12-31 and 2012-12-31 by default), every
detector is fitted on the returns up to the split and scores every later day
from returns up to that day. An event counts as caught at level q when its day
or the next trading day is among the top q of scored days (q = 1 %, 2 %, 5 %),
and recall is the share caught, market-wide and single-asset events apart. The
"near" column is the share of the top-2 % days that lie within two trading
days of an event of either kind (a precision of sorts: most stress days are in
no list, so it is low for every detector).

**Detectors.** FinVAE (default parameters, ``random_state`` 0): its score and
each of its score parts (``score_parts``); and classical baselines on z-scores
against trailing volatility (RiskMetrics EWMA, half-life 20 days, known at the
previous close, as in the planted-anomaly benchmark): ``max_abs_z`` (largest
|z| of the day), ``mahalanobis`` (Ledoit-Wolf covariance of the training
z-scores), ``pca3_residual`` (squared residual outside 3 principal components
of the training z-scores), and ``abs_index`` (|return of the equal-weight
index|, no model at all).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA

from finvae import FinVAE
from finvae.datasets import load_sp500_sample, prices_to_returns

EVENTS = Path(__file__).resolve().parent / "data" / "stress_events.csv"
KINDS = ("market", "single")
LEVELS = (0.01, 0.02, 0.05)
#: Least |return| on the event day or the next for an event to count: the equal-weight index for a
#: market-wide event, the named stock for a single-asset one (the sanity check of the event list).
MARKET_MOVE = 0.02
SINGLE_MOVE = 0.05
NEAR_DAYS = 2
FLAG_LEVEL = 0.02


def load_events(path: Path = EVENTS) -> pd.DataFrame:
    """The event list: date, kind, ticker (single-asset events), event, source."""
    events = pd.read_csv(path, parse_dates=["date"], dtype={"ticker": str})
    bad = set(events["kind"]) - set(KINDS)
    if bad:
        raise ValueError(f"{path}: unknown kind(s) {sorted(bad)}; use {KINDS}.")
    return events.sort_values("date", ignore_index=True)


def check_events(events: pd.DataFrame, returns: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The events the data support (a trading day, a large move that day or the next), and why others are out."""
    index_return = returns.mean(axis=1)
    kept, dropped = [], []
    for row in events.itertuples(index=False):
        if row.date not in returns.index:
            dropped.append(f"{row.date.date()} {row.event}: not a trading day in the data")
            continue
        at = returns.index.get_loc(row.date)
        if row.kind == "market":
            move = index_return.iloc[at : at + 2].abs().max()
            ok = move >= MARKET_MOVE
        else:
            if row.ticker not in returns.columns:
                dropped.append(f"{row.date.date()} {row.event}: {row.ticker} is not in the data")
                continue
            move = returns[row.ticker].iloc[at : at + 2].abs().max()
            ok = move >= SINGLE_MOVE
        if ok:
            kept.append(row)
        else:
            dropped.append(f"{row.date.date()} {row.event}: largest move {move:.1%}, too small")
    return pd.DataFrame(kept, columns=events.columns), dropped


# ---- baselines: each takes (returns, split) and returns a per-day score Series ----

def _ewma_z(returns: pd.DataFrame) -> pd.DataFrame:
    vol = returns.ewm(halflife=20).std().shift(1).clip(lower=1e-4)
    return (returns / vol).replace([np.inf, -np.inf], np.nan).fillna(0.0)


def max_abs_z(returns: pd.DataFrame, split) -> pd.Series:
    return _ewma_z(returns).abs().max(axis=1)


def mahalanobis(returns: pd.DataFrame, split) -> pd.Series:
    z = _ewma_z(returns)
    cov = LedoitWolf().fit(z.loc[:split].iloc[60:].to_numpy())
    return pd.Series(cov.mahalanobis(z.to_numpy()), index=z.index)


def pca_residual(returns: pd.DataFrame, split, k: int = 3) -> pd.Series:
    z = _ewma_z(returns)
    pca = PCA(k).fit(z.loc[:split].iloc[60:].to_numpy())
    residual = z - pca.inverse_transform(pca.transform(z.to_numpy()))
    return (residual**2).sum(axis=1)


def abs_index(returns: pd.DataFrame, split) -> pd.Series:
    return returns.mean(axis=1).abs()


BASELINES = {"max_abs_z": max_abs_z, "mahalanobis": mahalanobis, "pca3_residual": pca_residual,
             "abs_index": abs_index}


def evaluate(score: pd.Series, events: pd.DataFrame, split) -> dict[str, float]:
    """Recall of each kind at each level, and the share of top-2 % days near an event, over the days after ``split``."""
    score = score.loc[score.index > pd.Timestamp(split)].dropna()
    ranks = score.rank(ascending=False, method="first").to_numpy()  # 1 = the most anomalous day
    after = events[events["date"] > pd.Timestamp(split)]
    result: dict[str, float] = {}
    for kind in KINDS:
        dates = after.loc[after["kind"] == kind, "date"]
        positions = score.index.searchsorted(dates)
        best = np.array([ranks[p : p + 2].min() for p in positions if p < len(score)])  # the day or the next
        for level in LEVELS:
            result[f"{kind}@{level:.0%}"] = float((best <= level * len(score)).mean()) if len(best) else float("nan")
        result[f"n_{kind}"] = len(best)
    flagged = np.flatnonzero(ranks <= FLAG_LEVEL * len(score))
    event_positions = score.index.searchsorted(after["date"])
    near = np.abs(flagged[:, None] - event_positions[None, :]).min(axis=1) <= NEAR_DAYS if len(after) else flagged < 0
    result["near"] = float(near.mean()) if len(flagged) else float("nan")
    return result


def detectors_for_split(returns: pd.DataFrame, split, random_state: int | None, params: dict) -> dict[str, pd.Series]:
    """Every detector's score on every day, fitted on the returns up to ``split``."""
    model = FinVAE(random_state=random_state, verbose=0, **params).fit(returns.loc[:split])
    parts = model.score_parts(returns)
    scores = {"finvae score": parts.max(axis=1, skipna=False)}
    scores.update({f"  part {name}": parts[name] for name in parts.columns})
    scores.update({name: detect(returns, split) for name, detect in BASELINES.items()})
    scores["finvae score"].attrs["threshold"] = model.threshold_
    return scores


def format_table(rows: dict[str, dict[str, float]]) -> str:
    columns = [f"{kind}@{level:.0%}" for kind in KINDS for level in LEVELS] + ["near"]
    header = f"{'detector':18s} " + " ".join(f"{c:>10s}" for c in columns)
    lines = [header]
    for name, row in rows.items():
        lines.append(f"{name:18s} " + " ".join(f"{row[c]:10.2f}" for c in columns))
    return "\n".join(lines)


def draw(returns: pd.DataFrame, events: pd.DataFrame, scores: dict[str, pd.Series], split, path: Path) -> Path:
    """The equal-weight index with the events, FinVAE's flags and its top-2 % days marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = np.exp(returns.mean(axis=1).fillna(0.0).cumsum())
    fig, ax = plt.subplots(figsize=(13, 5.5))
    ax.plot(index.index, index.to_numpy(), color="0.3", lw=0.8, label="equal-weight index (log scale)")
    ax.set_yscale("log")
    for kind, color in (("market", "tab:red"), ("single", "tab:purple")):
        dates = events.loc[events["kind"] == kind, "date"]
        for i, date in enumerate(dates):
            ax.axvline(date, color=color, alpha=0.35, lw=0.8,
                       label=f"{'market-wide' if kind == 'market' else 'single-asset'} event" if i == 0 else None)
    threshold = scores["finvae score"].attrs["threshold"]
    score = scores["finvae score"].loc[scores["finvae score"].index > pd.Timestamp(split)].dropna()
    flagged = score.index[score > threshold]
    top = score.index[score.rank(ascending=False, method="first") <= FLAG_LEVEL * len(score)]
    ax.scatter(flagged, index.loc[flagged] * 1.12, marker="v", s=14, color="tab:blue", zorder=3,
               label=f"flagged by predict (score > threshold_): {len(flagged)} days")
    ax.scatter(top, index.loc[top] * 0.88, marker="^", s=14, color="tab:green", zorder=3,
               label=f"top 2 % of scored days: {len(top)} days")
    ax.axvline(pd.Timestamp(split), color="k", ls="--", lw=1.0,
               label=f"split {pd.Timestamp(split).date()}: fit before, score after")
    ax.set_title("Real stress events and FinVAE's flags (fitted before the split, scored after it)")
    ax.legend(loc="upper left", fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", nargs="+", default=["2005-12-31", "2012-12-31"])
    parser.add_argument("--random-states", nargs="+", type=int, default=[0])
    parser.add_argument("--params", default="{}", help="JSON keyword arguments for FinVAE")
    parser.add_argument("--figure", type=Path, help="draw the index with events and flags to this PNG (first split)")
    parser.add_argument("--quick", action="store_true", help="toy size: 2003-2009, two epochs (for the tests)")
    args = parser.parse_args(argv)
    import json

    params = json.loads(args.params)
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the sample's known stale-price runs (RRC in 1990)
        returns = prices_to_returns(load_sp500_sample())
    splits = args.splits
    if args.quick:
        returns = returns.loc["2003":"2009"]
        splits = ["2006-12-31"]
        params = {"epochs": 2, **params}
    events = load_events()
    events = events[(events["date"] >= returns.index[0]) & (events["date"] <= returns.index[-1])]
    events, dropped = check_events(events, returns)
    counts = events["kind"].value_counts()
    print(f"{len(events)} events ({counts.get('market', 0)} market-wide, {counts.get('single', 0)} single-asset); "
          f"{len(dropped)} left out" + "".join(f"\n  left out: {d}" for d in dropped))
    results: dict = {"events": len(events), "dropped": dropped, "splits": {}}
    began = time.perf_counter()
    for split in splits:
        per_state = []
        for random_state in args.random_states:
            scores = detectors_for_split(returns, split, random_state, params)
            per_state.append({name: evaluate(score, events, split) for name, score in scores.items()})
            if args.figure is not None and split == splits[0] and random_state == args.random_states[0]:
                print(f"figure: {draw(returns, events, scores, split, args.figure)}")
        table = {name: {k: float(np.mean([s[name][k] for s in per_state])) for k in per_state[0][name]}
                 for name in per_state[0]}
        results["splits"][split] = table
        first = next(iter(table.values()))
        print(f"\nsplit {split}: fitted on returns up to it, scored after it "
              f"({first['n_market']:.0f} market-wide and {first['n_single']:.0f} single-asset events after it; "
              f"mean over random_state {' '.join(map(str, args.random_states))})")
        print(format_table(table))
    results["seconds"] = time.perf_counter() - began
    print(f"\n{results['seconds']:.0f} s")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
