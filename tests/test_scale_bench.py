"""benchmarks/scale_bench.py: its data and one serial run on a tiny setting (the figures mean nothing here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "scale_bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmarks_scale_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_data_are_seeded_noisy_copies_of_the_sample(bench):
    a, b = bench.make_returns(30, 400, seed=1), bench.make_returns(30, 400, seed=1)
    assert a.shape == (400, 30) and a.equals(b)
    assert not a.equals(bench.make_returns(30, 400, seed=2))
    assert a.columns.is_unique and a.index.is_monotonic_increasing
    # Copies of one stock are correlated, not equal.
    stocks = a.columns.str.rsplit("_", n=1).str[0]
    group = a.loc[:, stocks == stocks.value_counts().index[0]]
    assert group.shape[1] >= 2
    assert 0.5 < group.corr().to_numpy()[0, 1] < 0.99


def test_layout_gives_the_number_of_refits(bench):
    assert bench.layout(5000, 20) == 5000 - 20 * bench.REFIT_EVERY
    with pytest.raises(SystemExit, match="need more than"):
        bench.layout(300, 20)


def test_a_tiny_serial_run_reports_its_figures(bench):
    args = bench.parse(["--quick"])
    out = bench.run_one("serial", args)
    assert out["refits"] == 2 and out["assets"] == 20 and out["days"] == 600
    assert out["wall_s"] > 0 and np.isclose(out["wall_per_refit_s"] * 2, out["wall_s"])
    assert out["worker_peak_mib"][0] > 50 and len(out["digest"]) == 64
