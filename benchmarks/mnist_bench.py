"""MNIST benchmark: (a) the trainer's overhead over a plain PyTorch loop, (b) test NELBO for latent 2 and 20.

(a) Overhead. Both sides train the same :class:`finvae.nn.ConvVAE` (same initial
weights) on the same 5,000 offline digits, for the same epochs, with the same
batches in the same order and the same sampling noise:

- ``train_vae`` with ``TrainingConfig(batch_size=32, validation_fraction=0,
  patience=None, lr_schedule="constant", max_grad_norm=10, verbose=0)``: per
  step it gathers a batch, computes the loss, checks it is finite, backprops,
  clips, steps Adam and accumulates the epoch's sums on the device; per epoch
  it builds the history row.
- the plain loop: per step it gathers a batch, computes the loss, backprops,
  and steps Adam (which clips first); nothing else (no finiteness check, no
  history). It uses the trainer's optimiser, ``finvae.training.Adam``, so that
  the two do the same arithmetic; that optimiser takes the steps of
  ``clip_grad_norm_`` and ``torch.optim.Adam`` up to float rounding
  (tests/test_training.py), and a step of it costs less than theirs.

They run alternately, ``--repeats`` times each, and the ratio compares the
median wall times. Both end with identical weights, which the script checks:
the comparison is of the same arithmetic, not of two different trainings.

(b) Test NELBO. The example's recipe (``examples/mnist_vae.py``: one-cycle
Adam, batch 32, ±1-pixel random shifts, about 3,100 steps, bfloat16 mixed
precision where the CPU has it) on all the training digits
available (5,000 offline), scored on the real MNIST test set in ``--test-dir``
with z sampled from q. Skipped, with a message, when that folder has no test set.

Run ``python benchmarks/mnist_bench.py [--test-dir DIR]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from finvae.datasets import load_mnist, load_mnist_idx
from finvae.nn import ConvVAE
from finvae.training import Adam, TensorBatches, TrainingConfig, seeded, train_vae

ROOT = Path(__file__).resolve().parents[1]


def _load_example():
    spec = importlib.util.spec_from_file_location("mnist_vae_example", ROOT / "examples" / "mnist_vae.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def plain_loop(model: nn.Module, x: torch.Tensor, cfg: TrainingConfig) -> None:
    """The same training as ``train_vae(model, TensorBatches(x), cfg)``, written out by hand."""
    generator = torch.Generator().manual_seed(cfg.seed)
    train_idx = torch.randperm(len(x), generator=generator)  # what the trainer's split draws
    optimizer = Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model.train()
        for _ in range(cfg.epochs):
            order = train_idx[torch.randperm(len(x), generator=generator)]
            for start in range(0, len(x), cfg.batch_size):
                recon, kl = model.elbo_terms(x[order[start : start + cfg.batch_size]])
                loss = (recon + kl).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    model.eval()


def overhead(x: torch.Tensor, epochs: int, repeats: int, seed: int = 0) -> None:
    """Print the median wall times of ``train_vae`` and of the plain loop, and their ratio."""
    batch = _load_example().BATCH_SIZE
    cfg = TrainingConfig(
        epochs=epochs, batch_size=batch, validation_fraction=0.0, patience=None, lr_schedule="constant",
        max_grad_norm=10.0, device="cpu", seed=seed, verbose=0,
    )  # fmt: skip
    times: dict[str, list[float]] = {"train_vae": [], "plain": []}
    weights = {}
    for _ in range(repeats):
        for name in times:  # alternate, so that a burst of load on the machine hits both
            with seeded(seed):
                model = ConvVAE(2)
            start = time.perf_counter()
            if name == "train_vae":
                train_vae(model, TensorBatches(x), cfg)
            else:
                plain_loop(model, x, cfg)
            times[name].append(time.perf_counter() - start)
            weights[name] = model.state_dict()
    same = all(torch.equal(a, weights["plain"][k]) for k, a in weights["train_vae"].items())
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"(a) {len(x)} digits, {epochs} epochs, batch {batch}, float32, {repeats} alternating runs each (median):")
    print(f"    train_vae {med['train_vae']:.2f} s, plain loop {med['plain']:.2f} s, same weights: {same}")
    print(f"    trainer_overhead_ratio={med['train_vae'] / med['plain']:.3f}")


def nelbo(x_train: torch.Tensor, x_test: torch.Tensor, latent_sizes: list[int], seed: int = 0) -> None:
    """Print the test NELBO of the example's recipe for each latent size."""
    example = _load_example()
    print(f"(b) example recipe, {len(x_train)} training digits, {len(x_test)} real MNIST test images:")
    for latent_dim in latent_sizes:
        start = time.perf_counter()
        model, history = example.train_mnist_vae(x_train, latent_dim, seed=seed, verbose=0)
        recon, kl = example.test_nelbo(model, x_test, seed)
        print(
            f"    latent {latent_dim:>2}: test_nelbo_nats={recon + kl:.1f} (reconstruction {recon:.1f} + KL "
            f"{kl:.1f}), {len(history)} epochs, {time.perf_counter() - start:.0f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--test-dir", type=Path, default=ROOT.parent / "shared" / "data" / "mnist",
                        help="folder with MNIST's t10k IDX files (default ../shared/data/mnist)")  # fmt: skip
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST folder (default: user cache)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each overhead run (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="overhead runs of each side (default 3)")
    parser.add_argument("--skip-nelbo", action="store_true", help="only measure the overhead")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the offline fallback's warning: we say what we train on
        (x_train, _), _ = load_mnist(args.data_dir, fallback_test_size=0)
    x_train = torch.from_numpy(x_train)
    overhead(x_train[:5000], args.epochs, args.repeats)
    if args.skip_nelbo:
        return
    try:
        x_test, _ = load_mnist_idx(args.test_dir, "test")
    except FileNotFoundError as exc:
        print(f"(b) skipped: no real MNIST test set ({exc}); pass --test-dir DIR")
        return
    nelbo(x_train, torch.from_numpy(x_test), [2, 20])


if __name__ == "__main__":
    main()
