"""Walk-forward FinVAE at scale: one process beside a Dask LocalCluster, wall time and peak memory.

Run ``python benchmarks/scale_bench.py`` (needs ``pip install "finvae[dask]"``);
``--assets --days --refits --epochs --workers`` scale it, ``--quick`` runs a
tiny version in seconds.

**Data** (seeded, ``--seed``, default 0): the last ``--days`` (5,000) days of
the bundled sample's daily log returns (20 stocks), spread to ``--assets``
(500) columns: column ``j`` is a randomly drawn sample stock's returns plus
independent Gaussian noise with half that stock's standard deviation. Missing
values stay missing, so the panel keeps the sample's market moves, volatility
clusters and any gaps; within a group of columns
drawn from the same stock, correlations are about 0.8. (The last 5,000 days,
2003-2022, have no gaps; longer ``--days`` bring the sample's early gaps.)

**Walk-forward**: :func:`finvae.backtest.walk_forward` with
``FinVAE(window=20, latent_dim=3, epochs=--epochs, random_state=0, verbose=0,
device="cpu")`` (10 epochs by default, where the main job allows 60 with early
stopping: the whole benchmark stays within about ten minutes on a shared
2-core machine), an expanding window, and ``refit_every=126`` days with
``min_train`` set so that there are exactly ``--refits`` (20) refits. Each
refit fits on every day before its block and scores every day up to the
block's end.

**Two runs**, each in a fresh Python process (so that each peak is its own):

- ``n_jobs=1``: the refits one after the other in that process;
- ``cluster``: a ``dask.distributed.LocalCluster`` of ``--workers`` (2) worker
  processes with one thread each, driven through
  ``joblib.parallel_config(backend="dask")``. Dask starts its workers with
  ``MALLOC_TRIM_THRESHOLD_=65536``, which (being set at all) freezes glibc's
  mmap threshold at 128 KiB: each MB-sized tensor that a fit frees goes back
  to the OS and page-faults in again at the next step, and a FinVAE fit takes
  about 50 % more CPU time (measured: 2.3 s in the kernel beside 4.8 s in user
  code for three refits of 500 assets, against 0.2 s without it). The
  benchmark therefore also sets ``MALLOC_MMAP_THRESHOLD_`` to
  ``--mmap-threshold`` (64 MiB) in the workers' environment; ``0`` leaves
  Dask's defaults, to measure the difference.

Reported: wall time of the walk-forward (the cluster's start-up, with each
worker's first import of torch and finvae, excluded and shown apart), wall
time per refit (wall ÷ refits), the mean compute time of one refit task as a
worker ran it (Dask's task stream; the serial run's is wall ÷ refits), the
resident memory of each worker before the walk-forward (torch, finvae and, in
the serial run, the data: the baseline) and its peak (``ru_maxrss``, read with
``client.run`` after the walk-forward: the worker's high-water mark since it
started, torch and the shipped data included; the serial run's worker is its
own process), the driver's peak, the CPU time the workers used (user +
system, from psutil, summed over the workers: the work done, which moves much
less with the load than the wall time) and the driver's, and whether the runs
gave identical scores, thresholds and flags. ``--repeats N`` runs each N
times, alternating which goes first, and shows each one's fastest run.

The machine is shared: figures move with the load, so the table ends with the
1-minute load average at the start and end of each run (above the number of
cores, other processes were taking CPU time from the walk-forward).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

REFIT_EVERY = 126
WINDOW = 20


def make_returns(n_assets: int, n_days: int, seed: int) -> pd.DataFrame:
    """The last ``n_days`` of the sample's log returns, spread to ``n_assets`` noisy copies (see the docstring)."""
    from finvae.datasets import load_sp500_sample, prices_to_returns

    sample = prices_to_returns(load_sp500_sample(), stale_days=None)
    if n_days > len(sample):
        raise SystemExit(f"--days {n_days} is more than the sample's {len(sample)} days.")
    sample = sample.iloc[-n_days:]
    rng = np.random.default_rng(seed)
    source = rng.integers(0, sample.shape[1], n_assets)
    base = sample.to_numpy()[:, source]
    noise = rng.standard_normal(base.shape) * (0.5 * np.nanstd(base, axis=0))
    columns = [f"{sample.columns[s]}_{j}" for j, s in enumerate(source)]
    return pd.DataFrame(base + noise, index=sample.index, columns=columns)


def layout(n_days: int, refits: int) -> int:
    """``min_train`` that gives ``refits`` blocks of ``REFIT_EVERY`` days."""
    min_train = n_days - refits * REFIT_EVERY
    if min_train < 2 * WINDOW:
        raise SystemExit(f"{refits} refits of {REFIT_EVERY} days need more than {n_days} days.")
    return min_train


def peak_mib() -> float:
    """This process's peak resident memory in MiB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _warm_up() -> float:
    """Import torch and finvae (once per worker); this process's resident memory then, in MiB."""
    import finvae.estimator  # noqa: F401  (torch comes with it)

    return rss_mib()


def cpu_s() -> float:
    """CPU seconds (user + system, all threads) this process has used."""
    import psutil

    times = psutil.Process().cpu_times()
    return times.user + times.system


def rss_mib() -> float:
    """This process's resident memory now, in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _digest(wf: pd.DataFrame) -> str:
    h = hashlib.sha256()
    for column in ("score", "threshold", "flag"):
        h.update(np.ascontiguousarray(wf[column].to_numpy()).tobytes())
    return h.hexdigest()


def run_one(mode: str, args: argparse.Namespace) -> dict:
    """One walk-forward in this process (serial) or on a fresh LocalCluster: its figures."""
    import torch

    from finvae import FinVAE
    from finvae.backtest import walk_forward

    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    returns = make_returns(args.assets, args.days, args.seed)
    min_train = layout(args.days, args.refits)
    estimator = FinVAE(window=WINDOW, latent_dim=3, epochs=args.epochs, random_state=0, verbose=0, device="cpu")
    settings = dict(refit_every=REFIT_EVERY, min_train=min_train)
    out = {"mode": mode, "assets": returns.shape[1], "days": len(returns), "refits": args.refits,
           "epochs": args.epochs, "data_mib": returns.memory_usage(deep=True).sum() / 2**20}
    if mode == "serial":
        out["worker_rss_before_mib"] = [rss_mib()]
        began, cpu = time.perf_counter(), cpu_s()
        wf = walk_forward(estimator, returns, n_jobs=1, **settings)
        out["wall_s"] = time.perf_counter() - began
        out["worker_cpu_s"] = out["driver_cpu_s"] = cpu_s() - cpu
        out["task_s"] = out["wall_s"] / args.refits
        out["worker_peak_mib"] = [peak_mib()]
    else:
        import dask
        import joblib
        from distributed import Client, LocalCluster, get_task_stream

        # Dask starts its worker processes with MALLOC_TRIM_THRESHOLD_=65536. Setting it at all freezes
        # glibc's mmap threshold at 128 KiB, so every MB-sized tensor a fit frees goes back to the OS and
        # page-faults in again at the next step: a FinVAE fit then spends about half as much CPU time
        # again in the kernel. --mmap-threshold sets MALLOC_MMAP_THRESHOLD_ too (0: Dask's defaults).
        key = "distributed.nanny.pre-spawn-environ"
        if args.mmap_threshold:
            dask.config.set({f"{key}.MALLOC_MMAP_THRESHOLD_": args.mmap_threshold})
        out["malloc"] = {k: v for k, v in dask.config.get(key).items() if k.startswith("MALLOC")}
        began = time.perf_counter()
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            client.wait_for_workers(args.workers)
            # Each worker imports torch and finvae once, as the serial process has.
            out["worker_rss_before_mib"] = sorted(client.run(_warm_up).values())
            out["cluster_start_s"] = time.perf_counter() - began
            workers_cpu = client.run(cpu_s)
            began, cpu = time.perf_counter(), cpu_s()
            with get_task_stream(client) as stream, joblib.parallel_config(backend="dask"):
                wf = walk_forward(estimator, returns, **settings)
            out["wall_s"] = time.perf_counter() - began
            out["driver_cpu_s"] = cpu_s() - cpu
            out["worker_cpu_s"] = sum(after - workers_cpu[w] for w, after in client.run(cpu_s).items())
            durations = [sum(stop - start for kind, start, stop in
                             ((s["action"], s["start"], s["stop"]) for s in task["startstops"]) if kind == "compute")
                         for task in stream.data]
            out["tasks"] = len(durations)
            out["task_s"] = float(np.sum(durations)) / args.refits
            peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            out["worker_peak_mib"] = sorted(peaks.values())
    out["load"] = (load_before, os.getloadavg()[0])
    out["wall_per_refit_s"] = out["wall_s"] / args.refits
    out["driver_peak_mib"] = peak_mib()
    out["digest"] = _digest(wf)
    out["flags"] = int(wf["flag"].sum())
    return out


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=int, default=500)
    parser.add_argument("--days", type=int, default=5000)
    parser.add_argument("--refits", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mmap-threshold", type=int, default=64 * 2**20,
                        help="MALLOC_MMAP_THRESHOLD_ of the Dask workers in bytes (default 64 MiB; 0: leave Dask's "
                             "worker environment as it is)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each, alternating (serial first, then cluster first, ...); the fastest is shown")
    parser.add_argument("--quick", action="store_true", help="tiny: 20 assets, 600 days, 2 refits, 1 epoch")
    parser.add_argument("--mode", choices=("serial", "cluster"), help=argparse.SUPPRESS)  # one run, in this process
    args = parser.parse_args(argv)
    if args.quick:
        args.assets, args.days, args.refits, args.epochs = 20, 600, 2, 1
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse(argv)
    if args.mode:  # a child: one run, its figures as JSON on the last line of stdout
        print(json.dumps(run_one(args.mode, args)), flush=True)
        return {}
    passed = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--quick"]
    if args.quick:
        passed += ["--assets", str(args.assets), "--days", str(args.days), "--refits", str(args.refits),
                   "--epochs", str(args.epochs)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    runs = {"serial": [], "cluster": []}
    for repeat in range(args.repeats):
        for mode in ("serial", "cluster")[:: 1 if repeat % 2 == 0 else -1]:
            child = subprocess.run([sys.executable, __file__, *passed, "--mode", mode], env=env,
                                   capture_output=True, text=True, check=False)
            if child.returncode != 0:
                raise SystemExit(f"The {mode} run failed:\n{child.stderr[-3000:]}")
            runs[mode].append(json.loads(child.stdout.strip().splitlines()[-1]))
    serial, cluster = (min(runs[mode], key=lambda run: run["wall_s"]) for mode in ("serial", "cluster"))
    print(f"Walk-forward FinVAE: {serial['assets']} assets x {serial['days']:,} days "
          f"({serial['data_mib']:.0f} MiB), {args.refits} refits every {REFIT_EVERY} days, "
          f"{args.epochs} epoch(s) per fit, on {os.cpu_count()} cores")
    rows = {
        "wall time (s)": (serial["wall_s"], cluster["wall_s"]),
        "wall time per refit (s)": (serial["wall_per_refit_s"], cluster["wall_per_refit_s"]),
        "one refit task (s)": (serial["task_s"], cluster["task_s"]),
        "CPU time of the workers per refit (s)": (serial["worker_cpu_s"] / args.refits,
                                                  cluster["worker_cpu_s"] / args.refits),
        "CPU time of the driver (s)": (serial["driver_cpu_s"], cluster["driver_cpu_s"]),
        "memory per worker before (MiB)": (max(serial["worker_rss_before_mib"]),
                                           max(cluster["worker_rss_before_mib"])),
        "peak memory per worker (MiB)": (max(serial["worker_peak_mib"]), max(cluster["worker_peak_mib"])),
        "peak memory of the driver (MiB)": (serial["driver_peak_mib"], cluster["driver_peak_mib"]),
        "1-min load average at start": (serial["load"][0], cluster["load"][0]),
        "1-min load average at end": (serial["load"][1], cluster["load"][1]),
    }
    table = pd.DataFrame(rows, index=["n_jobs=1", f"LocalCluster {args.workers}x1"]).T
    print(table.round(1).to_string())
    print(f"cluster start-up: {cluster['cluster_start_s']:.1f} s (not in the wall time); workers' "
          f"environment {cluster['malloc']}; "
          f"worker peaks: {', '.join(f'{m:.0f}' for m in cluster['worker_peak_mib'])} MiB; "
          f"speed-up: {serial['wall_s'] / cluster['wall_s']:.2f}x")
    if args.repeats > 1:
        for mode, name in (("serial", "n_jobs=1"), ("cluster", "cluster")):
            walls = ", ".join(f"{run['wall_s']:.1f}" for run in runs[mode])
            print(f"{name} wall times of the {args.repeats} runs: {walls} s")
    same = len({run["digest"] for run in runs["serial"] + runs["cluster"]}) == 1
    print(f"identical scores, thresholds and flags: {same} ({serial['flags']} flagged days)")
    return {"serial": serial, "cluster": cluster, "runs": runs, "identical": same}


if __name__ == "__main__":  # the LocalCluster's worker processes import this file again
    main()
