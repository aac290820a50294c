"""Training throughput of FinVAE beside PyOD's VAE, and FinVAE's peak memory at scale.

Run ``python benchmarks/speed_bench.py`` (needs ``pyod``) for throughput, and
``python benchmarks/speed_bench.py --scale`` for memory.

**Throughput.** Both models fit the rolling 20-day windows of the bundled
sample's daily log returns (20 stocks, about 8,300 days) on the CPU for
``--epochs`` (10) epochs, in the same process, one after the other, with the
same torch thread count (``--threads``, default 1). FinVAE's fit pins itself
to one thread on the CPU whatever the setting, so one thread is the like-for-like
comparison; ``--threads 2`` lets PyOD use two. On a shared machine two threads
can be far slower than one: when the other core is busy, PyOD's fit of these
windows took 98 s with two threads against 0.35 s with one (threads waiting on
each other), so a ratio measured that way says more about the load than the models.
The figure is windows x epochs per second of ``fit`` wall time (each fit's own
post-fit pass over the training data included), and FinVAE's ratio to PyOD's.

- FinVAE: default parameters except ``validation_fraction=0`` (so that, like
  PyOD, it trains on every window rather than holding 10 % out for early
  stopping), ``device="cpu"``, ``verbose=0``, ``random_state=0``; the epochs
  counted are the rows of ``history_``.
- PyOD: ``pyod.models.vae.VAE(latent_dim=3, epoch_num=epochs)`` with its other
  defaults, on the windows flattened to 400 features and standardised with
  the sample's mean and standard deviation.

Before timing, each model makes one small untimed fit: PyOD compiles a numba
function on its first fit (several seconds, once per process), which is not
throughput.

The machines here are shared: absolute numbers move with the load, the
ratio from one run much less. ``--repeats N`` fits each model N times,
alternating, and keeps each one's best.

**Memory** (``--scale``). A fresh Python process (so the peak is this fit's
alone) builds ``--assets`` x ``--days`` (2,000 x 5,000) Student-t returns as a
float64 DataFrame and fits FinVAE on it with ``window=60``, one epoch; it
prints the input's size, the resident memory just before ``fit``, and the
peak resident memory of the process (``ru_maxrss``, which includes the Python
interpreter, torch and the input itself).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from finvae.datasets import load_sp500_sample, prices_to_returns
from finvae.training import torch_threads

WINDOW = 20


def warm_up(returns: pd.DataFrame) -> None:
    """One small untimed fit of each model, so that one-off costs are charged to neither.

    PyOD's fit ends by scoring its training data through a numba function
    that is compiled on first use (several seconds); torch too sets itself up
    on its first steps.
    """
    small = returns.iloc[:100]
    finvae_throughput(small, 1)
    pyod_throughput(small, 1)


def finvae_throughput(returns: pd.DataFrame, epochs: int) -> float:
    """Windows x epochs per second of a FinVAE fit on ``returns``."""
    from finvae import FinVAE

    model = FinVAE(window=WINDOW, epochs=epochs, validation_fraction=0.0, device="cpu", verbose=0, random_state=0)
    start = time.perf_counter()
    model.fit(returns)
    seconds = time.perf_counter() - start
    return (len(returns) - WINDOW + 1) * len(model.history_) / seconds


def pyod_throughput(returns: pd.DataFrame, epochs: int) -> float:
    """Windows x epochs per second of a PyOD VAE fit on the flattened windows of ``returns``."""
    from pyod.models.vae import VAE

    z = ((returns - returns.mean()) / returns.std()).to_numpy(np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(z, WINDOW, axis=0).reshape(len(z) - WINDOW + 1, -1)
    model = VAE(latent_dim=3, epoch_num=epochs, verbose=0)
    start = time.perf_counter()
    model.fit(windows)
    seconds = time.perf_counter() - start
    return len(windows) * epochs / seconds


def _rss_mb() -> float:
    """Current resident memory of this process in MB (Linux), NaN where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def scale_child(n_assets: int, n_days: int, window: int) -> dict[str, float]:
    """Fit FinVAE once on synthetic returns of the given size; print and return its memory figures."""
    from finvae import FinVAE

    rng = np.random.default_rng(0)
    index = pd.bdate_range("2000-01-03", periods=n_days)
    returns = pd.DataFrame(rng.standard_t(4, (n_days, n_assets)) * 0.01, index=index).add_prefix("A")
    result = {"assets": n_assets, "days": n_days, "window": window,
              "input_mb": returns.memory_usage(deep=True).sum() / 2**20, "rss_before_fit_mb": _rss_mb()}
    start = time.perf_counter()
    FinVAE(window=window, epochs=1, random_state=0, device="cpu", verbose=0).fit(returns)
    result["fit_s"] = time.perf_counter() - start
    # ru_maxrss is in KiB on Linux
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs per fit (default 10)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both (default 1)")
    parser.add_argument("--repeats", type=int, default=1, help="fits per model, best kept (default 1)")
    parser.add_argument("--quick", action="store_true", help="smoke-test size: last 150 days, 1 epoch")
    parser.add_argument("--scale", action="store_true", help="peak memory of one fit in a fresh process")
    parser.add_argument("--assets", type=int, default=2000, help="--scale: assets (default 2000)")
    parser.add_argument("--days", type=int, default=5000, help="--scale: days (default 5000)")
    parser.add_argument("--window", type=int, default=60, help="--scale: window (default 60)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Run the benchmark and print its figures.

    Returns
    -------
    dict
        Throughput: ``finvae``, ``pyod_vae`` (windows x epochs / s), ``ratio``,
        ``threads``, ``epochs``, ``windows``. With ``--scale``: ``input_mb``,
        ``rss_before_fit_mb``, ``peak_rss_mb``, ``fit_s`` and the sizes.
    """
    args = parse_args(argv)
    if args.child:
        return scale_child(args.assets, args.days, args.window)
    if args.scale:
        command = [sys.executable, __file__, "--child", "--assets", str(args.assets), "--days", str(args.days),
                   "--window", str(args.window)]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"FinVAE fit, {args.assets} assets x {args.days} days, window {args.window}, 1 epoch: "
              f"input {result['input_mb']:.0f} MB, RSS before fit {result['rss_before_fit_mb']:.0f} MB, "
              f"peak RSS {result['peak_rss_mb']:.0f} MB, fit {result['fit_s']:.1f} s")
        return result

    returns = prices_to_returns(load_sp500_sample(), stale_days=None)
    epochs = args.epochs
    if args.quick:
        returns, epochs = returns.iloc[-150:], 1
    ours, theirs = 0.0, 0.0
    # A context, not torch.set_num_threads: a caller (a test) gets its own thread count back.
    with torch_threads(args.threads):
        warm_up(returns)
        for _ in range(args.repeats):
            ours = max(ours, finvae_throughput(returns, epochs))
            theirs = max(theirs, pyod_throughput(returns, epochs))
    n_windows = len(returns) - WINDOW + 1
    print(f"{n_windows} windows of {WINDOW} days x {returns.shape[1]} stocks, {epochs} epochs, "
          f"torch threads {args.threads}, best of {args.repeats}")
    print(f"{'model':10s} {'windows*epochs/s':>17s}\n{'finvae':10s} {ours:17.0f}\n{'pyod_vae':10s} {theirs:17.0f}")
    print(f"ratio finvae / pyod_vae: {ours / theirs:.1f}")
    return {"finvae": ours, "pyod_vae": theirs, "ratio": ours / theirs, "threads": args.threads,
            "epochs": epochs, "windows": n_windows}


if __name__ == "__main__":
    main()
