"""Planted anomalies on several variants of the sample: how a change to FinVAE was chosen, and checked.

Run ``python benchmarks/variants_bench.py`` (about 40 s on 2 cores);
``--params '{"window": 10}'`` passes keyword arguments to FinVAE, and
``--random-states 0 1 2 3`` fits each training set once per random state.

A change to the score or to a default is chosen on one group of planted sets
and checked on another, so that it is not a fit to one planting. Each set is a
variant of ``anomaly_bench.py``'s design (same planting, same evaluation):

========  ===========================================  ======================
set       variant                                      plantings (seeds)
========  ===========================================  ======================
std       the default design: 20 stocks, split 2012    1-8 select, 9-16 check
t10       the first 10 stocks only                     1-8 select
weak      sizes 6 / 3 / 2 sd (idio, market, disp.)     1-8 select
tm10      the last 10 stocks only                      1-8 check
s07       split 2007-12-31 (2008 in the test period)   1-8 check
strong    sizes 10 / 5 / 4 sd                          1-4 check
========  ===========================================  ======================

The criterion is the **worst kind's shortfall**: for each planting, FinVAE's AP
on each kind minus the best classical detector's AP on that kind, and the
smallest of the three; averaged over a set's plantings, then over the group's
sets. Zero or above means FinVAE is at least level with the best baseline on
every kind. The table also gives the mean overall AP and each kind's mean
difference.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

# Python puts a script's own folder on sys.path, so its neighbour imports as a module.
from anomaly_bench import (
    KINDS,
    Design,
    average_precision,
    finvae,
    mahalanobis,
    max_abs_z,
    pca_residual,
    plant,
    sample_returns,
)

BASELINES = {"max_abs_z": max_abs_z, "pca3_residual": pca_residual, "mahalanobis": mahalanobis}


@dataclass(frozen=True)
class Variant:
    """One planted set: which stocks, which design, which seeds, and whether it selects or checks."""

    name: str
    group: str  # "select" or "check"
    seeds: tuple[int, ...]
    assets: tuple[int | None, int | None] = (None, None)  # the columns' slice: (None, 10) the first ten
    design: Design = Design()


def _sizes(idio: float, market: float, dispersion: float) -> Design:
    return replace(Design(), idio_sigma=idio, market_sigma=market, dispersion_sigma=dispersion)


VARIANTS = (
    Variant("std", "select", tuple(range(1, 9))),
    Variant("t10", "select", tuple(range(1, 9)), assets=(None, 10)),
    Variant("weak", "select", tuple(range(1, 9)), design=_sizes(6, 3, 2)),
    Variant("std", "check", tuple(range(9, 17))),
    Variant("tm10", "check", tuple(range(1, 9)), assets=(-10, None)),
    Variant("s07", "check", tuple(range(1, 9)), design=replace(Design(), split="2007-12-31")),
    Variant("strong", "check", tuple(range(1, 5)), design=_sizes(10, 5, 4)),
)


def run(params: dict, random_states: Sequence[int], variants: Sequence[Variant] = VARIANTS,
        sample: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (variant, random state, seed): FinVAE's AP and its differences from the best baseline."""
    sample = sample_returns() if sample is None else sample
    fitted: dict[tuple, dict] = {}  # training sets shared by variants are fitted once
    rows = []
    for variant in variants:
        returns = sample.iloc[:, slice(*variant.assets)]
        train = returns.loc[: variant.design.split]
        key = (tuple(returns.columns), variant.design.split)
        if key not in fitted:
            fitted[key] = {name: detector(train) for name, detector in BASELINES.items()}
            for state in random_states:
                fitted[key][state] = finvae(train, {**params, "random_state": state})
        scorers = fitted[key]
        for seed in variant.seeds:
            planting = plant(returns, variant.design, seed)
            best = {kind: -np.inf for kind in ("all", *KINDS)}
            for name in BASELINES:
                result = average_precision(scorers[name](planting.returns), planting, variant.design)
                best = {kind: max(best[kind], result[kind]) for kind in best}
            for state in random_states:
                result = average_precision(scorers[state](planting.returns), planting, variant.design)
                rows.append({"set": variant.name, "group": variant.group, "random_state": state, "seed": seed,
                             "all": result["all"], "best_all": best["all"],
                             **{kind: result[kind] - best[kind] for kind in KINDS}})
    table = pd.DataFrame(rows)
    table["worst"] = table[list(KINDS)].min(axis=1)
    return table


def summary(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, float]]:
    """Means per set (in the order of ``VARIANTS``), and each group's mean worst-kind shortfall."""
    columns = ["all", "best_all", *KINDS, "worst"]
    per_set = table.groupby(["group", "set"], sort=False)[columns].mean()
    groups = {group: float(per_set.loc[group, "worst"].mean()) for group in ("select", "check")}
    return per_set, groups


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="{}", help="JSON keyword arguments for FinVAE, e.g. '{\"window\": 10}'")
    parser.add_argument("--random-states", type=int, nargs="+", default=[0, 1],
                        help="FinVAE random_state values; each training set is fitted once per value (default 0 1)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke-test size: 2004-2016, one planting per set, 3 per kind, FinVAE 2 epochs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Print the per-set table and the two groups' criterion; return the criterion."""
    args = parse_args(argv)
    params = {"verbose": 0, **json.loads(args.params)}
    print(f"FinVAE parameters: {json.loads(args.params) or 'defaults'}; random states {args.random_states}")
    variants, sample = VARIANTS, None
    if args.quick:
        variants = [replace(v, seeds=v.seeds[:1], design=replace(v.design, n_per_kind=3)) for v in VARIANTS]
        sample = sample_returns("2004-01-01", "2016-12-31")
        params.setdefault("epochs", 2)
    per_set, groups = summary(run(params, args.random_states, variants, sample))
    print("\nmean over plantings and random states; kinds: FinVAE's AP minus the best baseline's")
    kinds = " ".join(f"{k:>10s}" for k in KINDS)
    print(f"{'group':7s} {'set':7s} {'AP':>6s} {'best':>6s} {kinds} {'worst':>7s}")
    for (group, name), row in per_set.iterrows():
        print(f"{group:7s} {name:7s} {row['all']:6.3f} {row['best_all']:6.3f} "
              + " ".join(f"{row[k]:+10.3f}" for k in KINDS) + f" {row['worst']:+7.3f}")
    print(f"\nmean worst-kind shortfall: selection {groups['select']:+.4f}, check {groups['check']:+.4f}")
    return groups


if __name__ == "__main__":
    main()
