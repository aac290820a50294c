"""Causal volatility scaling and rolling windows over a (days × assets) array.

Two things make a VAE on returns work: returns in units of their *own recent*
volatility (1995, 2008 and 2020 then look alike, so the score measures
surprise, not the volatility regime), and windows that are views into one
array (memory grows with days × assets, not with the window length).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.signal import lfilter
from torch import Tensor

__all__ = ["WindowBatches", "ewma_scale", "sliding_windows"]


def ewma_scale(
    returns: np.ndarray,
    *,
    halflife: float,
    initial_var: np.ndarray,
    floor: np.ndarray,
) -> np.ndarray:
    """Trailing volatility of each asset, known at the close of the *previous* day.

    An exponentially weighted moving average of squared returns::

        var[0]   = initial_var
        var[t+1] = lam * var[t] + (1 - lam) * r[t]**2,    lam = 0.5 ** (1 / halflife)
        scale[t] = max(sqrt(var[t]), floor)

    so ``scale[t]`` uses returns up to ``t - 1`` only and ``r[t] / scale[t]`` is
    the surprise of day ``t``. A NaN return (asset not yet listed, a gap)
    leaves the variance unchanged: the last estimate carries forward.
    ``initial_var`` (the training-period variance) starts the recursion, and
    ``floor`` keeps stale prices (long runs of zero returns) from driving the
    scale to zero.

    Parameters
    ----------
    returns : ndarray of shape (n_days, n_assets)
        Returns, demeaned by the caller if wanted; NaN where missing.
    halflife : float
        Half-life of the weights in days.
    initial_var, floor : ndarray of shape (n_assets,)
        Starting variance and lowest allowed scale per asset.

    Returns
    -------
    scale : ndarray of shape (n_days, n_assets), float32

    Examples
    --------
    >>> import numpy as np
    >>> from finvae.windows import ewma_scale
    >>> returns = np.array([[0.02], [np.nan], [0.0]])
    >>> scale = ewma_scale(returns, halflife=1.0, initial_var=np.array([1e-4]), floor=np.array([1e-3]))
    >>> [round(float(s), 4) for s in scale[:, 0]]    # sqrt(0.5 * 1e-4 + 0.5 * 0.02**2), then carried over the NaN
    [0.01, 0.0158, 0.0158]
    """
    scale = np.empty(returns.shape, dtype=np.float32)
    # Column by column, as a linear filter over each asset's observed days: memory stays at
    # one (n_days, n_assets) array, and the recursion runs in C, not in a Python loop.
    for j, column in enumerate(returns.T):
        observed = ~np.isnan(column)
        # the variance before each observed day, and after the last
        variance = trailing_ewma(np.square(column[observed], dtype=np.float64), float(initial_var[j]), halflife)
        # Day t sees the variance after the last observed day before it; NaN days carry it forward.
        observed_before = np.cumsum(observed) - observed
        scale[:, j] = np.maximum(np.sqrt(variance[observed_before]), floor[j])
    return scale


def trailing_ewma(values: np.ndarray, start: float, halflife: float) -> np.ndarray:
    """Exponentially weighted mean of ``values`` known before each position, and after the last::

        level[0] = start,    level[i+1] = lam * level[i] + (1 - lam) * values[i],    lam = 0.5 ** (1 / halflife)

    Returns ``level``, of length ``len(values) + 1``: ``level[i]`` uses ``values[:i]`` only. A
    linear filter, so the recursion runs in C, not in a Python loop.
    """
    lam = 0.5 ** (1.0 / halflife)
    after, _ = lfilter([1.0 - lam], [1.0, -lam], np.asarray(values, dtype=np.float64), zi=[lam * start])
    return np.concatenate(([start], after))


def sliding_windows(values: Tensor, window: int) -> Tensor:
    """All windows of ``window`` consecutive days as a view: shape (n_windows, n_assets, window).

    ``values`` has shape (n_days, n_assets); window ``i`` covers days
    ``i .. i + window - 1`` and so *ends* on day ``i + window - 1``. Assets are
    the channels and days the length, the layout ``Conv1d`` expects. No data
    are copied.
    """
    return values.unfold(0, window, 1)


class WindowBatches:
    """Training examples for :func:`finvae.training.train_vae`: stretches of consecutive windows.

    A causal model that gives each day a code from the ``window`` days ending
    on it (:class:`finvae.nn.ReturnsVAE`) trains on every window ending inside
    a stretch of days at once. So the training days are cut into stretches of
    ``per_example`` window ends, each preceded by the ``window - 1`` days of
    context its first window needs; every training window counts exactly once
    per epoch, and a batch is one gather of the stretches it holds.

    Parameters
    ----------
    values : Tensor of shape (n_days, n_assets)
        Scaled returns with missing values set to 0.
    observed : Tensor of shape (n_days, n_assets), bool
        True where a value was observed.
    window : int
        Days per window.
    ends : Tensor of int
        Sorted positions of the days whose windows are trained on (the last
        day of each window); other days serve as context only.
    per_example : int
        Window ends per stretch.

    Each item is ``(x, observed, counted)``: ``x`` and ``observed`` of shape
    (batch, window - 1 + per_example, n_assets), and ``counted`` of shape
    (batch, window - 1 + per_example), True on the days whose windows count.

    Examples
    --------
    >>> import torch
    >>> from finvae.windows import WindowBatches
    >>> values, observed = torch.zeros(100, 4), torch.ones(100, 4, dtype=torch.bool)   # 100 days, 4 assets
    >>> batches = WindowBatches(values, observed, window=20, ends=torch.arange(19, 100), per_example=32)
    >>> len(batches)                        # 81 window ends in stretches of 32
    3
    >>> x, seen, counted = batches[torch.tensor([0, 1])]
    >>> x.shape, int(counted.sum())        # 19 days of context + 32 window ends each
    (torch.Size([2, 51, 4]), 64)
    """

    def __init__(self, values: Tensor, observed: Tensor, window: int, ends: Tensor, per_example: int) -> None:
        first, last = int(ends[0]), int(ends[-1])
        n_examples = -(-(last - first + 1) // per_example)
        self.values, self.observed = values, observed
        # The last stretch may run past the data: those days repeat the last
        # day (no copy of the data to pad it) and never count.
        self.last_day = len(values) - 1
        self.counted = torch.zeros(first + n_examples * per_example, dtype=torch.bool)
        self.counted[ends] = True
        self.context = window - 1
        self.offsets = torch.arange(-self.context, per_example)
        self.starts = first + per_example * torch.arange(n_examples)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        days = self.starts[index, None] + self.offsets  # (batch, days), all >= 0
        counted = self.counted[days]
        counted[:, : self.context] = False  # context days count in the stretch before
        days = days.clamp(max=self.last_day)
        return self.values[days], self.observed[days], counted
