"""walk_forward on a real Dask cluster (worker processes), `finvae run --scheduler`, Ray's backend, missing dask."""

from __future__ import annotations

import logging
import sys

import joblib
import numpy as np
import pandas as pd
import pytest

import finvae
from finvae import DataError, FinVAE
from finvae._cluster import MissingDependencyError, dask_backend, import_distributed
from finvae.backtest import walk_forward
from finvae.cli import main

FAST = dict(refit_every=50, min_train=200)  # 300 days: 2 refits


def tiny_returns(n_days=300, n_assets=4, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2015-01-01", periods=n_days)
    values = rng.normal(0.0004, 0.01, n_days)[:, None] + rng.normal(0, 0.005, (n_days, n_assets))
    values[[220, 280]] -= 0.06
    return pd.DataFrame(values, index=dates, columns=[f"S{i}" for i in range(n_assets)])


def tiny_vae(**params) -> FinVAE:
    return FinVAE(**{**dict(window=5, latent_dim=1, hidden=8, epochs=2, random_state=0, verbose=0, device="cpu"),
                     **params})


@pytest.fixture(scope="module")
def reference():
    """The walk-forward in this process, one refit after the other."""
    return walk_forward(tiny_vae(), tiny_returns(), n_jobs=1, **FAST)


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    # Worker processes, one thread each, as on a real cluster; they get this process's sys.path, so
    # they import this checkout's finvae (checked in the test).
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.ERROR) as cluster:
        yield cluster


def _finvae_file() -> str:
    import finvae

    return finvae.__file__


def test_walk_forward_on_a_local_cluster_gives_the_same_scores_as_n_jobs_1(cluster, reference):
    import distributed

    with distributed.Client(cluster) as client:
        files = client.run(_finvae_file)  # {worker address: its finvae.__file__}
        assert len(files) == 2 and set(files.values()) == {finvae.__file__}  # this checkout's finvae
        with distributed.get_task_stream(client) as tasks, joblib.parallel_config(backend="dask"):
            on_cluster = walk_forward(tiny_vae(), tiny_returns(), **FAST)
    pd.testing.assert_frame_equal(on_cluster, reference)
    assert len(tasks.data) >= 1 and {t["worker"] for t in tasks.data} <= set(files)  # it ran on the workers
    assert on_cluster["score"].notna().sum() > 50 and on_cluster["flag"].dtype == bool


def test_dask_backend_connects_to_a_running_scheduler(cluster, reference):
    with dask_backend(cluster.scheduler_address):
        on_cluster = walk_forward(tiny_vae(), tiny_returns(), **FAST)
    pd.testing.assert_frame_equal(on_cluster, reference)


def test_dask_backend_names_an_unreachable_scheduler():
    pytest.importorskip("distributed")
    with pytest.raises(DataError, match="Cannot reach a Dask scheduler at 'tcp://127.0.0.1:9'"):
        with dask_backend("tcp://127.0.0.1:9", timeout=1):
            pass


@pytest.mark.parametrize("greeting", [b"SSH-2.0-OpenSSH_9.6\r\n" * 4, None], ids=["other-service", "silent"])
def test_something_else_listening_is_not_taken_for_a_scheduler(greeting):
    """A mistyped port where another service answers (or nothing ever does): one clear error, within the timeout."""
    pytest.importorskip("distributed")
    import socket
    import threading
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held = []

    def serve():
        connection, _ = server.accept()
        held.append(connection)
        if greeting:
            connection.sendall(greeting)

    threading.Thread(target=serve, daemon=True).start()
    address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    began = time.perf_counter()
    with pytest.raises(DataError, match=f"(Cannot reach a|No) Dask scheduler .*{address}"):
        with dask_backend(address, timeout=2):
            pass
    assert time.perf_counter() - began < 10
    server.close()


def test_finvae_run_on_a_scheduler_with_a_checkpoint_resumes(cluster, tmp_path, capsys):
    from finvae.datasets import load_sp500_sample

    prices = tmp_path / "prices.csv"
    load_sp500_sample().loc["1996":"2001", ["AAPL", "JPM", "XOM", "KO"]].to_csv(prices)
    checkpoint = tmp_path / "checkpoint"

    def run(out):
        return main(["run", "--prices-csv", str(prices), "--start", "2000-01-01", "--epochs", "2",
                     "--refit-every", "300", "--no-figures", "--quiet", "--out", str(tmp_path / out),
                     "--scheduler", cluster.scheduler_address, "--checkpoint", str(checkpoint)])

    assert run("first") == 0
    blocks = sorted(checkpoint.glob("block-*.json"))
    assert len(blocks) == 2  # 2000-2001 is 2 blocks of 300 days
    stamps = [path.stat().st_mtime_ns for path in blocks]
    assert run("second") == 0
    assert [path.stat().st_mtime_ns for path in sorted(checkpoint.glob("block-*.json"))] == stamps  # not refitted
    first, second = (pd.read_csv(tmp_path / out / "scores.csv", index_col="Date") for out in ("first", "second"))
    pd.testing.assert_frame_equal(first, second)
    assert "Sharpe" in capsys.readouterr().out


def test_finvae_run_on_an_unreachable_scheduler_stops_before_any_work(monkeypatch, capsys):
    pytest.importorskip("distributed")
    import finvae._cluster as cluster_module

    monkeypatch.setattr(cluster_module.check_scheduler, "__kwdefaults__", {"timeout": 1.0})
    monkeypatch.setattr(FinVAE, "fit", lambda *a, **k: pytest.fail("fitted before checking the scheduler"))
    assert main(["run", "--scheduler", "tcp://127.0.0.1:9", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Cannot reach a Dask scheduler at 'tcp://127.0.0.1:9'" in err


def test_missing_dask_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r'pip install "finvae\[dask\]"') as caught:
        import_distributed()
    assert isinstance(caught.value, ImportError) and isinstance(caught.value, DataError)


def test_finvae_run_without_dask_prints_one_line_and_exits_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)
    assert main(["run", "--scheduler", "tcp://127.0.0.1:8786", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "finvae[dask]"' in err


def test_walk_forward_on_ray_gives_the_same_scores(reference):
    ray = pytest.importorskip("ray")
    from ray.util.joblib import register_ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        register_ray()
        with joblib.parallel_config(backend="ray"):
            on_ray = walk_forward(tiny_vae(), tiny_returns(), **FAST)
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(on_ray, reference)
