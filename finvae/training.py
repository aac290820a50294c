"""One training loop for every finvae VAE.

The loop is the plain PyTorch one (shuffle, forward, loss, backward, clip,
step) with what a user needs around it: a validation split, early stopping on
the validation loss, KL warm-up, an optional one-cycle learning rate, a
progress bar, a per-epoch history, seeding and a clear error when the loss
blows up. Data come as a :class:`Batches` object (anything that can be
indexed by a tensor of example positions), which keeps the per-batch cost at
one tensor gather: no ``DataLoader`` workers and no per-example collation.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from finvae._exceptions import TrainingError

__all__ = [
    "Batches",
    "TensorBatches",
    "TrainingConfig",
    "resolve_device",
    "resolve_precision",
    "seeded",
    "torch_threads",
    "train_vae",
]


class Batches(Protocol):
    """What the trainer needs from data: a length, and a batch for a tensor of positions."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: Tensor) -> Sequence[Tensor]: ...


class TensorBatches:
    """Batches from tensors that share their first axis (images, for instance)."""

    def __init__(self, *tensors: Tensor) -> None:
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("TensorBatches needs one or more tensors of the same length")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: Tensor) -> tuple[Tensor, ...]:
        return tuple(t[index] for t in self.tensors)


@dataclass
class TrainingConfig:
    """Settings of :func:`train_vae`.

    Parameters
    ----------
    epochs : int
        Most passes over the training data.
    batch_size : int
        Examples per gradient step.
    lr : float
        Adam's learning rate (the peak rate with ``lr_schedule="onecycle"``).
    weight_decay : float
        Adam's L2 penalty.
    beta : float
        Weight of the KL term: loss = reconstruction + beta * KL.
    kl_warmup : int
        Epochs over which the KL weight rises linearly from ``beta / kl_warmup``
        to ``beta`` (0: no warm-up). Early stopping waits until it is over.
    validation_fraction : float
        Share of the examples held out to measure the validation loss (0: none,
        and then no early stopping).
    split : {"random", "last"}
        How the validation examples are chosen: at random, or the last ones
        (for time series, so that validation lies after training).
    patience : int or None
        Stop when the validation loss has not improved for this many epochs,
        and restore the best weights. None: train all ``epochs``.
    max_grad_norm : float or None
        Clip the gradients' global norm to this (None: no clipping).
    lr_schedule : {"constant", "onecycle"}
        Learning rate schedule over the whole run.
    device : str
        "auto" (cuda, then mps, then cpu), or any torch device string.
    precision : {"float32", "bfloat16", "auto"}
        Arithmetic of the training forward and backward passes. "bfloat16" runs them
        under :func:`torch.autocast` (mixed precision: weights, optimiser state and
        the loss stay float32; matrix products and convolutions use bfloat16).
        "auto" picks bfloat16 where the hardware computes it natively (a CUDA GPU
        that supports it, a CPU with AVX512-BF16 or AMX) and float32 elsewhere.
        Validation and :func:`evaluate_elbo` always run in float32.
    seed : int or None
        Seeds weight initialisation, shuffling and sampling. The same seed, data
        and machine give the same numbers. The global torch RNG is left as it was.
    verbose : int
        0: silent; 1: a progress bar over epochs; 2: also one line per epoch.
    """

    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    beta: float = 1.0
    kl_warmup: int = 0
    validation_fraction: float = 0.1
    split: str = "random"
    patience: int | None = 10
    max_grad_norm: float | None = 10.0
    lr_schedule: str = "constant"
    device: str = "auto"
    precision: str = "float32"
    seed: int | None = None
    verbose: int = 1


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → cuda if available, then Apple's mps, then cpu; else ``torch.device(device)``."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype that ``precision`` means on ``device`` (float32: no autocast)."""
    if precision not in ("float32", "bfloat16", "auto"):
        raise ValueError(f"precision must be 'float32', 'bfloat16' or 'auto', got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            native = torch.cuda.is_bf16_supported()
        elif device.type == "cpu":
            # Private helpers of torch.cpu (torch >= 2.1): absent ones count as "no native bfloat16".
            checks = (getattr(torch.cpu, f"_is_{isa}_supported", None) for isa in ("avx512_bf16", "amx_tile"))
            native = any(check is not None and check() for check in checks)
        else:
            native = False
        precision = "bfloat16" if native else "float32"
    return torch.bfloat16 if precision == "bfloat16" else torch.float32


def split_indices(n: int, fraction: float, how: str, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Positions of the training and validation examples."""
    n_val = int(round(n * fraction)) if fraction > 0 else 0
    if n_val >= n:
        raise ValueError(f"validation_fraction={fraction} leaves no training examples out of {n}")
    if how == "last":
        order = torch.arange(n)
    elif how == "random":
        order = torch.randperm(n, generator=generator)
    else:
        raise ValueError(f"split must be 'random' or 'last', got {how!r}")
    return order[: n - n_val], order[n - n_val :]


def _to_device(batch: Sequence[Tensor], device: torch.device) -> list[Tensor]:
    return [t.to(device, non_blocking=True) for t in batch]


def _adam(model: nn.Module, cfg: TrainingConfig) -> torch.optim.Adam:
    """Adam, fused into one kernel per step where this torch supports it on the model's device.

    The fused update gives the numbers of the default loop over parameters, up
    to float rounding, and takes a tenth off a FinVAE fit on a CPU, where a
    step's many small updates cost as much as its matrix products (torch >= 2.4
    on cpu). The model must already be on its device.
    """
    params = list(model.parameters())
    try:
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch, or a device without the fused kernel
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _nonfinite_error(epoch: int, step: int, cfg: TrainingConfig) -> TrainingError:
    return TrainingError(
        f"The loss became NaN or infinite at epoch {epoch}, step {step}. Try a lower learning rate "
        f"(lr={cfg.lr:g} now), stronger gradient clipping (max_grad_norm={cfg.max_grad_norm}), "
        "a KL warm-up, or check the input for extreme values (e.g. prices passed as returns)."
    )


@torch.no_grad()
def evaluate_elbo(
    model: nn.Module, data: Batches, index: Tensor, batch_size: int, device: torch.device
) -> tuple[float, float]:
    """Mean reconstruction NLL and mean KL over the examples at ``index`` (z sampled from q)."""
    was_training = model.training
    model.eval()
    recon_sum = kl_sum = 0.0
    for start in range(0, len(index), batch_size):
        recon, kl = model.elbo_terms(*_to_device(data[index[start : start + batch_size]], device))
        recon_sum += float(recon.sum())
        kl_sum += float(kl.sum())
    model.train(was_training)
    n = max(len(index), 1)
    return recon_sum / n, kl_sum / n


def train_vae(model: nn.Module, data: Batches, config: TrainingConfig | None = None) -> pd.DataFrame:
    """Train ``model`` on ``data`` in place and return its per-epoch history.

    ``model`` is a :class:`finvae.nn.VAE` (anything with ``elbo_terms(*batch)``
    returning per-example reconstruction NLL and KL). Its weights should be
    initialised before the call (seed first: see ``config.seed``).

    Returns
    -------
    history : pandas.DataFrame
        One row per epoch run, indexed by epoch (from 1): ``train_loss``,
        ``train_recon``, ``train_kl``, ``val_loss``, ``val_recon``, ``val_kl``
        (NaN without validation), ``beta``, ``lr`` and ``seconds``. Losses are
        mean nats per example; ``val_loss`` always uses the full ``beta`` so that
        epochs compare. ``history.attrs["best_epoch"]`` is the epoch whose
        weights the model holds at the end.

    Raises
    ------
    TrainingError
        If the loss becomes NaN or infinite.
    """
    cfg = config or TrainingConfig()
    device = resolve_device(cfg.device)
    autocast_dtype = resolve_precision(cfg.precision, device)
    model.to(device)
    generator = torch.Generator()
    generator.manual_seed(cfg.seed if cfg.seed is not None else int(torch.randint(2**62, ()).item()))
    train_idx, val_idx = split_indices(len(data), cfg.validation_fraction, cfg.split, generator)
    n_train = len(train_idx)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)

    optimizer = _adam(model, cfg)
    scheduler = None
    if cfg.lr_schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch
        )
    elif cfg.lr_schedule != "constant":
        raise ValueError(f"lr_schedule must be 'constant' or 'onecycle', got {cfg.lr_schedule!r}")

    rows: list[dict[str, float]] = []
    best_loss, best_epoch, best_state, bad_epochs = math.inf, 0, None, 0
    bar = tqdm(range(1, cfg.epochs + 1), desc="training", unit="epoch", disable=cfg.verbose < 1)
    # Sampling noise comes from the global RNG: seed it inside a fork so that
    # the caller's RNG state is untouched.
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        if cfg.seed is not None:
            torch.manual_seed(cfg.seed)
        model.train()
        for epoch in bar:
            start = time.perf_counter()
            beta = cfg.beta * min(1.0, epoch / cfg.kl_warmup) if cfg.kl_warmup else cfg.beta
            order = train_idx[torch.randperm(n_train, generator=generator)]
            recon_sum = torch.zeros((), device=device)
            kl_sum = torch.zeros((), device=device)
            for step in range(steps_per_epoch):
                batch = _to_device(data[order[step * cfg.batch_size : (step + 1) * cfg.batch_size]], device)
                with torch.autocast(device.type, autocast_dtype, enabled=autocast_dtype != torch.float32):
                    recon, kl = model.elbo_terms(*batch)
                recon, kl = recon.float(), kl.float()
                loss = (recon + beta * kl).mean()
                if not torch.isfinite(loss):
                    raise _nonfinite_error(epoch, step + 1, cfg)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                recon_sum += recon.detach().sum()
                kl_sum += kl.detach().sum()
            train_recon, train_kl = float(recon_sum) / n_train, float(kl_sum) / n_train
            row = {
                "train_loss": train_recon + beta * train_kl,
                "train_recon": train_recon,
                "train_kl": train_kl,
                "val_loss": math.nan,
                "val_recon": math.nan,
                "val_kl": math.nan,
                "beta": beta,
                "lr": optimizer.param_groups[0]["lr"],
            }
            if len(val_idx):
                val_recon, val_kl = evaluate_elbo(model, data, val_idx, 4 * cfg.batch_size, device)
                row.update(val_loss=val_recon + cfg.beta * val_kl, val_recon=val_recon, val_kl=val_kl)
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
            bar.set_postfix(loss=f"{row['train_loss']:.4g}", val=f"{row['val_loss']:.4g}")
            if cfg.verbose >= 2:
                tqdm.write(f"epoch {epoch}: " + ", ".join(f"{k}={v:.4g}" for k, v in row.items()))

            # Early stopping: only on validation loss, and only once the KL weight is final.
            if not len(val_idx) or cfg.patience is None:
                best_epoch = epoch
                continue
            if epoch >= cfg.kl_warmup and row["val_loss"] < best_loss:
                best_loss, best_epoch, bad_epochs = row["val_loss"], epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            elif epoch >= cfg.kl_warmup:
                bad_epochs += 1
                if bad_epochs >= cfg.patience:
                    break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history = pd.DataFrame(rows, index=pd.RangeIndex(1, len(rows) + 1, name="epoch"))
    history.attrs["best_epoch"] = best_epoch or len(rows)
    return history


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` intra-op CPU threads (None: leave as is), then restore the setting.

    Small networks train fastest on one thread: their operations are too
    small to split, and a second thread only waits at each barrier (badly so
    when another process holds the other core).
    """
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run a block (weight initialisation, sampling) with torch's RNG seeded, then restore it.

    With ``seed=None`` the block uses the global RNG as it is.
    """
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        yield
