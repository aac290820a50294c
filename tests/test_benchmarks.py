"""Smoke tests: each benchmark in benchmarks/ runs end to end on a tiny setting and returns its figures.

The benchmarks are scripts, not a package: they are loaded from their files.
Sizes are cut with each script's ``--quick`` flag (few assets or days, one or
two epochs), so the figures mean nothing here; only the plumbing is checked.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is being made
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def anomaly_bench() -> ModuleType:
    return _load("anomaly_bench")


def test_anomaly_bench_quick(anomaly_bench, capsys):
    results = anomaly_bench.main(["--quick", "--seeds", "1", "2"])
    assert set(results["per_seed"]) == {1, 2}
    assert set(results["mean"]) == {"max_abs_z", "pca3_residual", "mahalanobis", "finvae"}
    for table in (results["mean"], results["min"]):
        for row in table.values():
            assert set(row) == {"all", "idio", "market", "dispersion"}
            assert all(0.0 <= v <= 1.0 for v in row.values())
    assert results["min"]["finvae"]["all"] <= results["mean"]["finvae"]["all"]
    out = capsys.readouterr().out
    assert "mean over seeds 1 2" in out and "min over seeds 1 2" in out


def test_planting_design(anomaly_bench):
    """Planted days are in the test period, spaced, balanced by kind; a perfect score gets AP 1."""
    design = anomaly_bench.Design(split="2012-12-31", n_per_kind=5)
    returns = anomaly_bench.sample_returns("2010-01-01", "2015-12-31", assets=4)
    planting = anomaly_bench.plant(returns, design, seed=3)
    assert (planting.days > pd.Timestamp(design.split)).all()
    assert np.diff(returns.index.get_indexer(planting.days)).min() > design.exclude_after
    assert sorted(pd.Series(planting.kinds).value_counts().to_list()) == [5, 5, 5]
    # The training period is untouched, and only planted days differ.
    changed = returns.index[(planting.returns != returns).any(axis=1)]
    assert changed.isin(planting.days).all()
    perfect = pd.Series(returns.index.isin(planting.days).astype(float), index=returns.index)
    # The days right after a planted day are excluded: scoring them high must cost nothing.
    after = returns.index.get_indexer(planting.days) + 1
    perfect.iloc[after[after < len(perfect)]] = 2.0
    assert anomaly_bench.average_precision(perfect, planting, design) == {
        "all": 1.0, "idio": 1.0, "market": 1.0, "dispersion": 1.0}


def test_factor_bench_quick(capsys):
    result = _load("factor_bench").main(["--quick", "--latent", "1"])
    assert list(result["method"]) == ["FinVAE", "FinVAE beta=0.01 (diagnostic)", "PCA"]
    assert result["r2_test"].notna().all()
    assert "minus PCA" in capsys.readouterr().out


def test_speed_bench_quick():
    pytest.importorskip("pyod")
    result = _load("speed_bench").main(["--quick"])
    assert result["finvae"] > 0 and result["pyod_vae"] > 0
    assert math.isclose(result["ratio"], result["finvae"] / result["pyod_vae"])


def test_speed_bench_scale_child_small(capsys):
    """The --scale child on a tiny size, in this process (the real run uses a fresh one)."""
    result = _load("speed_bench").main(["--child", "--assets", "5", "--days", "200", "--window", "10"])
    assert result["peak_rss_mb"] > 0 and result["input_mb"] > 0
    assert '"peak_rss_mb"' in capsys.readouterr().out


def test_variants_bench_quick(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports anomaly_bench, as a script run from its folder does
    groups = _load("variants_bench").main(["--quick", "--random-states", "0"])
    assert set(groups) == {"select", "check"}
    assert all(-1.0 <= v <= 1.0 for v in groups.values())
    out = capsys.readouterr().out
    for name in ("std", "t10", "weak", "tm10", "s07", "strong"):
        assert f" {name} " in out


@pytest.fixture(scope="module")
def events_bench() -> ModuleType:
    return _load("events_bench")


def test_events_bench_quick(events_bench, capsys):
    results = events_bench.main(["--quick"])
    (table,) = results["splits"].values()
    assert {"finvae score", "  part market", "mahalanobis", "abs_index"} <= set(table)
    for row in table.values():
        assert 0.0 <= row["market@2%"] <= row["market@5%"] <= 1.0 and row["n_market"] > 0
    assert "split 2006-12-31" in capsys.readouterr().out


def test_the_event_list_is_dated_sourced_and_supported_by_the_data(events_bench):
    events = events_bench.load_events()
    assert len(events) >= 40 and events["source"].str.len().min() > 10
    assert events["date"].between("1990-01-01", "2022-12-31").all() and not events["date"].duplicated().any()
    single = events[events["kind"] == "single"]
    assert single["ticker"].notna().all() and events.loc[events["kind"] == "market", "ticker"].isna().all()
    returns = pd.DataFrame(0.0, index=pd.bdate_range("1990-01-01", "2022-12-31"), columns=sorted(set(single["ticker"])))
    kept, dropped = events_bench.check_events(events, returns)  # no moves at all: every event is left out
    assert kept.empty and len(dropped) == len(events)


def test_recall_counts_an_event_caught_on_its_day_or_the_next(events_bench):
    days = pd.bdate_range("2020-01-01", periods=200)
    score = pd.Series(np.arange(200.0) % 7, index=days)
    score.iloc[[50, 121]] = 100.0  # the top 1 % of 200 days: two days
    events = pd.DataFrame({"date": [days[50], days[120], days[150]], "kind": ["market", "single", "market"]})
    result = events_bench.evaluate(score, events, "2019-12-31")
    assert result["market@1%"] == 0.5 and result["single@1%"] == 1.0
    assert result["near"] == pytest.approx(2 / 4)  # top 2 %: days 50, 121 and two days scored 6


def test_risk_bench_quick(capsys):
    pytest.importorskip("arch")
    results = _load("risk_bench").main(["--quick", "--n-jobs", "1"])
    assert {"FinVAE h=21", "sample", "equal weight"} <= set(results["gmv"].index)
    assert {"FinVAE", "RiskMetrics", "FHS"} <= set(results["var"].index)
    assert np.isfinite(results["gmv"]["gmv_vol"]).all()
    assert "exceptions" in capsys.readouterr().out


def test_stylized_facts_bench_quick(capsys):
    pytest.importorskip("arch")
    result = _load("stylized_facts_bench").main(["--quick"])
    assert {"FinVAE dynamics", "GARCH-t CCC", "FHS", "block bootstrap"} <= set(result["discriminative"].columns)
    assert np.isfinite(result["quant"].to_numpy()).all()
    assert result["coverage"].shape == (6, 4)
