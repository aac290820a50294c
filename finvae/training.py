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
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Protocol

import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from finvae._exceptions import TrainingError

__all__ = [
    "Adam",
    "Batches",
    "TensorBatches",
    "TrainingConfig",
    "resolve_device",
    "resolve_precision",
    "seeded",
    "torch_threads",
    "train_vae",
]

#: torch's random generator is one per process. finvae's blocks that draw from it (weight initialisation,
#: training, sampling: ``seeded(..., exclusive=True)`` and :func:`train_vae`) hold this lock, so that fits
#: running in threads (joblib's threading backend, a Dask worker with several threads) do not interleave their
#: draws: a seeded fit then gives the same numbers in a thread as alone. Such fits run one at a time; processes
#: run in parallel. Other code that draws from torch's generator in another thread meanwhile (a plain
#: ``seeded`` block, ``torch.randn``) still changes a fit's numbers: the lock is not held there, so that such a
#: block may wait for a fit in another thread without a deadlock.
_RNG_LOCK = threading.RLock()

#: torch's thread count is one per process too: open :func:`torch_threads` blocks (nested, or in threads) share
#: one setting, the latest open block's, and the caller's comes back when the last of them ends.
_THREADS_LOCK = threading.Lock()
_threads_state: dict = {"open": [], "before": None}


class Batches(Protocol):
    """What the trainer needs from data: a length, and a batch for a tensor of positions."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: Tensor) -> Sequence[Tensor]: ...


class TensorBatches:
    """Batches from tensors that share their first axis (images, for instance).

    Examples
    --------
    >>> import torch
    >>> from finvae.training import TensorBatches
    >>> batches = TensorBatches(torch.zeros(10, 3), torch.arange(10))
    >>> len(batches)
    10
    >>> x, y = batches[torch.tensor([0, 5])]
    >>> x.shape, y.tolist()
    (torch.Size([2, 3]), [0, 5])
    """

    def __init__(self, *tensors: Tensor) -> None:
        tensors = tuple(torch.as_tensor(t) for t in tensors)  # numpy arrays too (their dtype is kept)
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
        Seeds the shuffling, the validation split and the sampling of the latent
        codes. The weights are initialised when the model is built, before
        training: build it inside ``with seeded(seed):`` (:func:`seeded`) for the
        same starting weights. The same seed, data and machine then give the same
        numbers, and the global torch RNG is left as it was. With None, the
        shuffling seed is drawn from the global torch RNG (so ``torch.manual_seed``
        before training makes a run repeatable too).
    verbose : int
        0: silent; 1: a progress bar over epochs; 2: also one line per epoch.

    Notes
    -----
    Every number is checked when the config is made: a ValueError names the field.
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

    def __post_init__(self) -> None:
        def whole(name: str, least: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < least:
                raise ValueError(f"{name} must be an integer ≥ {least}; got {value!r}.")

        def number(name: str, least: float, *, above: bool = False, most: float | None = None) -> None:
            value = getattr(self, name)
            ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
            ok = ok and (value > least if above else value >= least) and (most is None or value < most)
            if not ok:
                bound = f"> {least:g}" if above else f"≥ {least:g}"
                raise ValueError(f"{name} must be a finite number {bound}{f' and < {most:g}' if most else ''}; "
                                 f"got {value!r}.")

        whole("epochs", 1)
        whole("batch_size", 1)
        whole("kl_warmup", 0)
        if not isinstance(self.verbose, Integral) or self.verbose < 0:  # True/False are 1/0 here
            raise ValueError(f"verbose must be 0, 1 or 2; got {self.verbose!r}.")
        number("lr", 0.0, above=True)
        number("weight_decay", 0.0)
        number("beta", 0.0)
        number("validation_fraction", 0.0, most=1.0)
        if self.patience is not None:
            whole("patience", 1)
        if self.seed is not None:
            whole("seed", 0)
            self.seed = int(self.seed)  # numpy integers too: torch's generator takes a Python int
        if self.max_grad_norm is not None:
            number("max_grad_norm", 0.0, above=True)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → cuda if available, then Apple's mps, then cpu; else ``torch.device(device)``.

    A device that this torch cannot use (a typo, or ``"cuda"`` on a CPU-only build) is a ValueError
    naming it and the devices that are available here.

    Examples
    --------
    >>> from finvae.training import resolve_device
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("auto").type in ("cuda", "mps", "cpu")
    True
    """
    if str(device) != "auto":
        try:
            resolved = torch.device(device)
        except RuntimeError:
            raise ValueError(f"device={device!r} is not a torch device; use 'auto', 'cpu', 'cuda', 'cuda:0' or 'mps' "
                             f"(available here: {', '.join(_available_devices())}).") from None
        if resolved.type == "meta":  # tensors without data: nothing can be trained on it
            raise ValueError(f"device={device!r} holds no data, so nothing can be trained on it; pass 'auto' or "
                             f"one of the devices available here: {', '.join(_available_devices())}.")
        if resolved.type != "cpu" and resolved.type not in _available_devices():
            raise ValueError(f"device={device!r}, but this torch cannot use {resolved.type} "
                             f"(available here: {', '.join(_available_devices())}). Pass device='auto' or 'cpu'.")
        return resolved
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _available_devices() -> list[str]:
    """The torch device types that work on this machine."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


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
    if n == 0:
        raise ValueError("there are no examples to train on (the data are empty).")
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


class Adam:
    """Adam (Kingma & Ba, 2015) with global gradient-norm clipping, as ``torch.optim.Adam`` computes it.

    The update, for each parameter ``p`` with gradient ``g``::

        g = g * min(1, max_grad_norm / (||all gradients|| + 1e-6))   # clip_grad_norm_
        g = g + weight_decay * p                                     # L2, as in torch.optim.Adam
        m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g**2
        p -= lr / (1 - beta1**t) * m / (sqrt(v / (1 - beta2**t)) + eps)

    with ``t`` the step count. ``tests/test_training.py`` checks it against
    ``nn.utils.clip_grad_norm_`` followed by ``torch.optim.Adam``, with and
    without the one-cycle schedule.

    Why finvae has its own: the first ``torch.optim`` optimiser created in a
    process imports ``torch._dynamo`` (about a second on a two-core machine, as
    long as a whole FinVAE fit on 30 years of daily returns), and the trainer
    never compiles anything. And speed: the parameters are moved into one flat
    buffer, each staying a view of its slice, so that clipping and the update
    are a dozen operations on one tensor. torch's multi-tensor kernels loop
    over the tensors on a CPU, a dozen operations per parameter, which for
    FinVAE's small layers took a sixth of each training step.

    Create it after moving the model to its device: ``step`` raises if the
    parameters have left the buffer.
    """

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, max_grad_norm: float | None = None) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.max_grad_norm = max_grad_norm
        self.flat = _flatten(self.params)
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        # Work buffers, allocated once: a fresh large tensor per step costs page faults.
        self._grad, self._denom = torch.empty_like(self.flat), torch.empty_like(self.flat)
        self.steps = [0] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """Clip, then update every parameter that has a gradient (the others, and their step counts, stay)."""
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        if self.params[0].data_ptr() != self.flat.data_ptr():
            raise RuntimeError(
                "The parameters no longer live in Adam's flat buffer: the model was moved (model.to(...)) or its "
                "parameters replaced after the optimiser was created. Create the optimiser after moving the model."
            )
        if len(live) < len(self.params) or len(set(self.steps)) > 1:
            self._step_each(live)  # rare: some parameters had no gradient
            return
        grad = torch.cat([p.grad.reshape(-1) for p in self.params], out=self._grad)
        if self.max_grad_norm is not None:
            grad.mul_((self.max_grad_norm / (torch.linalg.vector_norm(grad) + 1e-6)).clamp(max=1.0))
        self.steps = [t + 1 for t in self.steps]
        self._update(self.flat, grad, self.exp_avg, self.exp_avg_sq, self.steps[0], self._denom)

    def _update(self, param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, t: int,
                denom: Tensor) -> None:
        """One Adam step of ``param`` in place; ``grad`` and ``denom`` are scratch and may be overwritten."""
        beta1, beta2 = self.betas
        if self.weight_decay:
            grad.add_(param, alpha=self.weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        torch.sqrt(exp_avg_sq, out=denom).div_((1 - beta2**t) ** 0.5).add_(self.eps)
        param.addcdiv_(exp_avg, denom, value=-self.lr / (1 - beta1**t))

    def _step_each(self, live: list[int]) -> None:
        params = [self.params[i] for i in live]
        if self.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        for i, p in zip(live, params, strict=True):
            self.steps[i] += 1
            state = (_view_of(b, self.params, i) for b in (self.exp_avg, self.exp_avg_sq))
            self._update(p, p.grad.clone(), *state, self.steps[i], _view_of(self._denom, self.params, i))


def _flatten(params: list[nn.Parameter]) -> Tensor:
    """Copy ``params`` into one flat tensor and make each parameter a view of its slice."""
    if len({(p.device, p.dtype) for p in params}) > 1:
        raise ValueError("Adam needs all parameters on one device and of one dtype")
    flat = torch.cat([p.detach().reshape(-1) for p in params]) if params else torch.zeros(0)
    for i, p in enumerate(params):
        p.data = _view_of(flat, params, i)
    return flat


def _view_of(flat: Tensor, params: list[nn.Parameter], i: int) -> Tensor:
    start = sum(p.numel() for p in params[:i])
    return flat[start : start + params[i].numel()].view_as(params[i])


def one_cycle(step: int, total_steps: int, max_lr: float) -> tuple[float, float]:
    """Learning rate and Adam's ``beta1`` for ``step`` (from 0) of a one-cycle schedule (Smith, 2018).

    The values of ``torch.optim.lr_scheduler.OneCycleLR`` with its defaults: over
    the first 30 % of the steps the rate rises from ``max_lr / 25`` to ``max_lr``
    while ``beta1`` falls from 0.95 to 0.85, then the rate falls to
    ``max_lr / 25e4`` while ``beta1`` returns to 0.95, each along a half cosine.
    """
    peak = 0.3 * total_steps - 1
    if step <= peak:
        pct, lrs, betas = step / peak, (max_lr / 25, max_lr), (0.95, 0.85)
    else:
        pct, lrs, betas = (step - peak) / (total_steps - 1 - peak), (max_lr, max_lr / 25e4), (0.85, 0.95)

    def anneal(start: float, end: float) -> float:
        return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)

    return anneal(*lrs), anneal(*betas)


def _nonfinite_error(epoch: int, step: int, cfg: TrainingConfig) -> TrainingError:
    return TrainingError(
        f"The loss became NaN or infinite at epoch {epoch}, step {step}. Try a lower learning rate "
        f"(lr={cfg.lr:g} now), stronger gradient clipping (max_grad_norm={cfg.max_grad_norm}), "
        f"a KL warm-up, a smaller KL weight (beta={cfg.beta:g} now), or check the input for extreme values "
        "(e.g. prices passed as returns)."
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

    Examples
    --------
    >>> import torch
    >>> from finvae.nn import ConvVAE
    >>> from finvae.training import TensorBatches, TrainingConfig, seeded, train_vae
    >>> with seeded(0):
    ...     model = ConvVAE(latent_dim=2)
    >>> images = torch.rand(64, 1, 28, 28)
    >>> config = TrainingConfig(epochs=2, batch_size=32, device="cpu", seed=0, verbose=0)
    >>> history = train_vae(model, TensorBatches(images), config)
    >>> len(history), list(history.columns[:3])
    (2, ['train_loss', 'train_recon', 'train_kl'])
    """
    cfg = config or TrainingConfig()
    if isinstance(data, Tensor) or not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise TypeError(f"train_vae takes batches that a tensor of positions indexes, such as TensorBatches(images); "
                        f"got {type(data).__name__}. Wrap tensors or arrays: TensorBatches(x) (a DataLoader or "
                        "Dataset: TensorBatches of the tensors it holds).")
    if len(data):
        probe = data[torch.arange(min(2, len(data)))]
        if not isinstance(probe, tuple | list) or not all(isinstance(t, Tensor) for t in probe):
            raise TypeError(f"train_vae's data must give a tuple of tensors for a tensor of positions, as "
                            f"TensorBatches(x) does; {type(data).__name__} gave {type(probe).__name__}. Wrap arrays "
                            "or a Dataset's tensors: TensorBatches(x).")
    device = resolve_device(cfg.device)
    autocast_dtype = resolve_precision(cfg.precision, device)
    model.to(device)
    with _RNG_LOCK:
        history = _train(model, data, cfg, device, autocast_dtype)
    return history


def _train(model: nn.Module, data: Batches, cfg: TrainingConfig, device: torch.device,
           autocast_dtype: torch.dtype) -> pd.DataFrame:
    """:func:`train_vae`'s loop, run while holding ``_RNG_LOCK``."""
    generator = torch.Generator()
    generator.manual_seed(cfg.seed if cfg.seed is not None else int(torch.randint(2**62, ()).item()))
    train_idx, val_idx = split_indices(len(data), cfg.validation_fraction, cfg.split, generator)
    n_train = len(train_idx)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)

    if cfg.lr_schedule not in ("constant", "onecycle"):
        raise ValueError(f"lr_schedule must be 'constant' or 'onecycle', got {cfg.lr_schedule!r}")
    optimizer = Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm)
    total_steps = cfg.epochs * steps_per_epoch

    rows: list[dict[str, float]] = []
    best_loss, best_epoch, best_state, bad_epochs = math.inf, 0, None, 0
    bar = tqdm(total=cfg.epochs, desc="training", unit="epoch", disable=cfg.verbose < 1)
    # Sampling noise comes from the global RNG: seed it inside a fork so that
    # the caller's RNG state is untouched.
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        if cfg.seed is not None:
            torch.manual_seed(cfg.seed)
        model.train()
        for epoch in range(1, cfg.epochs + 1):
            start = time.perf_counter()
            beta = cfg.beta * min(1.0, epoch / cfg.kl_warmup) if cfg.kl_warmup else cfg.beta
            order = train_idx[torch.randperm(n_train, generator=generator)]
            recon_sum = torch.zeros((), device=device)
            kl_sum = torch.zeros((), device=device)
            for step in range(steps_per_epoch):
                if cfg.lr_schedule == "onecycle":
                    optimizer.lr, beta1 = one_cycle((epoch - 1) * steps_per_epoch + step, total_steps, cfg.lr)
                    optimizer.betas = (beta1, optimizer.betas[1])
                batch = _to_device(data[order[step * cfg.batch_size : (step + 1) * cfg.batch_size]], device)
                with torch.autocast(device.type, autocast_dtype, enabled=autocast_dtype != torch.float32):
                    recon, kl = model.elbo_terms(*batch)
                recon, kl = recon.float(), kl.float()
                loss = (recon + beta * kl).mean()
                if not torch.isfinite(loss):
                    raise _nonfinite_error(epoch, step + 1, cfg)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()  # clips the gradients' global norm to max_grad_norm first
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
                "lr": optimizer.lr,  # of the epoch's last step
            }
            if len(val_idx):
                val_recon, val_kl = evaluate_elbo(model, data, val_idx, 4 * cfg.batch_size, device)
                row.update(val_loss=val_recon + cfg.beta * val_kl, val_recon=val_recon, val_kl=val_kl)
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
            shown = {"loss": f"{row['train_loss']:.4g}"}
            if math.isfinite(row["val_loss"]):  # no validation split: nothing to show
                shown["val"] = f"{row['val_loss']:.4g}"
            bar.set_postfix(shown, refresh=False)
            bar.update(1)  # counted when the epoch is done, not when it starts
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
                    # A finished bar, not one cut short (a notebook draws that in red, as for an error):
                    # reset to the epochs run, which also resizes a notebook's widget, and filled.
                    if not bar.disable:
                        started, printed = bar.start_t, bar.last_print_t
                        bar.reset(total=epoch)
                        bar.start_t, bar.last_print_t = started, printed  # the time and rate of the epochs run
                        bar.update(epoch)
                    bar.set_postfix(shown | {"stopped": "early"})
                    break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    for parameter in model.parameters():  # out of Adam's flat buffer: each its own storage, as torch saves expect
        parameter.data = parameter.data.clone()
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

    Examples
    --------
    >>> import torch
    >>> from finvae.training import torch_threads
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    if n is None:
        yield
        return
    block = object()  # this block's place among the open ones, whichever thread closes first
    with _THREADS_LOCK:
        before = torch.get_num_threads()
        torch.set_num_threads(n)  # first: a count torch refuses leaves no block open behind it
        if not _threads_state["open"]:
            _threads_state["before"] = before
        _threads_state["open"].append((block, n))
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _threads_state["open"] = [entry for entry in _threads_state["open"] if entry[0] is not block]
            # The latest block still open sets the count (an outer torch_threads(8) gets its 8 back).
            torch.set_num_threads(_threads_state["open"][-1][1] if _threads_state["open"] else _threads_state["before"])


@contextlib.contextmanager
def seeded(seed: int | None, *, exclusive: bool = False) -> Iterator[None]:
    """Run a block (weight initialisation, sampling) with torch's RNG seeded, then restore it.

    With ``seed=None`` the block uses the global RNG as it is, and advances it: two unseeded calls
    draw different numbers. With ``exclusive=True`` the block also holds a process-wide lock, which
    :func:`train_vae` holds too, so that no block in another thread draws from the same RNG meanwhile
    (finvae's own draws are exclusive; a block that waits for another thread's fit must not be).

    Examples
    --------
    >>> import torch
    >>> from finvae.training import seeded
    >>> with seeded(0):
    ...     a = torch.rand(3)
    >>> with seeded(0):
    ...     b = torch.rand(3)
    >>> bool(torch.equal(a, b))
    True
    """
    with _RNG_LOCK if exclusive else contextlib.nullcontext():
        if seed is None:
            yield
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
