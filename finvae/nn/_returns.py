"""The returns VAE: causal 1-D convolutions over a window of days, assets as channels.

Tensors are laid out (batch, days, assets): time-major, so that a convolution
over days is one matrix product over the stacked taps, which is several times
faster on a CPU than ``nn.Conv1d`` at these small sizes.

The encoder reads a window with causal, dilated convolutions over time: the
code of day ``t`` depends on days ``t - window + 1 .. t`` only, and is a
Gaussian posterior ``N(mu_t, exp(log_var_t))`` of size ``latent_dim``. The
decoder maps each day's code back to that day's mean returns, linearly: the
code is a day's factor values, read in the context of the days before it, and
the decoder's weights are the assets' loadings on them. The window's code is
the code of its last day.

Why a code per day rather than one per window: a window of 20 days × 20
assets cannot be squeezed through three numbers, so a single code ends up
describing none of the days well, and the anomaly score then measures the
window, not the day. With a code per day, the KL term of the last day reacts
to a market-wide shock and its reconstruction residual to a broken
cross-section, which is what risk factors and a day-level score need.

The likelihood is Gaussian with a learned scale per asset and counts only
observed values: a missing return is left out of the loss rather than
treated as a zero return.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from finvae.nn._core import VAE, gaussian_kl, gaussian_nll, reparameterize, safe_log_var


class CausalConv(nn.Module):
    """Causal dilated 1-D convolution over the days of a (batch, days, channels) tensor.

    Output day ``t`` is a linear map of input days ``t, t - d, ..., t - (k - 1) d``:
    ``nn.Conv1d`` computed as one ``Linear`` over the stacked taps. With
    ``pad=True`` the input is padded with zeros before its first day and the
    output has as many days as the input; with ``pad=False`` only the days with
    all their taps inside the input are computed (the first ``reach`` days are
    dropped), which is all that training needs.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation
        self.linear = nn.Linear(kernel_size * in_channels, out_channels)

    @property
    def reach(self) -> int:
        """How many days back (besides today) the output sees."""
        return (self.kernel_size - 1) * self.dilation

    def forward(self, x: Tensor, pad: bool = True) -> Tensor:
        if pad:
            x = nn.functional.pad(x, (0, 0, self.reach, 0))
        days = x.shape[1] - self.reach
        # Tap j holds the input j * dilation days earlier.
        taps = [x[:, self.reach - j * self.dilation : self.reach - j * self.dilation + days]
                for j in range(self.kernel_size)]
        return self.linear(torch.cat(taps, dim=-1))


def conv_layout(window: int) -> list[tuple[int, int]]:
    """(kernel_size, dilation) of the encoder's layers, whose combined reach is exactly ``window - 1`` days.

    Kernel-3 layers with dilations 1, 2, 4, ... while the reach stays within
    the window, then one kernel-2 layer for what is left. A day's code so
    sees exactly ``window`` days, and running the encoder over a long series
    gives the same codes as running it on each window.
    """
    layout, reach = [], 0
    while reach + 2 * 2**len(layout) <= window - 1:
        layout.append((3, 2 ** len(layout)))
        reach += 2 * layout[-1][1]
    if (rest := window - 1 - reach) > 0:
        layout.append((2, rest))
    return layout


class CausalConvEncoder(nn.Module):
    """(batch, days, n_assets) → ``mu``, ``log_var``, each (batch, days, latent_dim)."""

    def __init__(self, n_assets: int, window: int, latent_dim: int, hidden: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (kernel_size, dilation) in enumerate(conv_layout(window)):
            layers += [CausalConv(n_assets if i == 0 else hidden, hidden, kernel_size, dilation), nn.GELU()]
        self.conv = nn.Sequential(*layers)
        self.z_mean = nn.Linear(hidden, latent_dim)
        self.z_log_var = nn.Linear(hidden, latent_dim)

    @property
    def reach(self) -> int:
        return sum(layer.reach for layer in self.conv if isinstance(layer, CausalConv))

    def forward(self, x: Tensor, pad: bool = True) -> tuple[Tensor, Tensor]:
        """Codes of every day (``pad=True``), or of the days from ``reach`` on, whose windows are full."""
        h = x
        for layer in self.conv:
            h = layer(h, pad) if isinstance(layer, CausalConv) else layer(h)
        return self.z_mean(h), self.z_log_var(h)


class FactorDecoder(nn.Module):
    """(batch, days, latent_dim) → mean returns (batch, days, n_assets): ``loadings @ code + offset``, day by day.

    A linear decoder makes the model a factor model whose factor values are
    inferred by a nonlinear, causal encoder. It is the choice that trains best
    here: on the S&P 500 sample (train ≤ 2012) a two-layer MLP decoder reached
    a worse validation ELBO (25.38 against 25.23 nats per day) and left two of
    three latent dimensions collapsed onto the prior, which the linear one did not.
    """

    def __init__(self, n_assets: int, latent_dim: int) -> None:
        super().__init__()
        self.loadings = nn.Linear(latent_dim, n_assets)

    def forward(self, z: Tensor) -> Tensor:
        return self.loadings(z)


class ReturnsVAE(VAE):
    """A causal convolutional VAE over windows of scaled returns, with a latent code per day.

    Input windows are (batch, days, n_assets), with ``days >= window``. The
    ELBO counts the days that have a full window behind them, days
    ``window - 1`` onwards: a batch of windows passes their last days only, and
    a longer stretch of days trains every window ending in it at once (each
    day's code sees ``window`` days at most, see :func:`conv_layout`). Training
    encodes only those days (:meth:`encode` with ``pad=False``).

    Parameters
    ----------
    n_assets : int
        Assets, the input channels.
    window : int
        Days per window: how far back each day's code sees.
    latent_dim : int
        Size of each day's latent code.
    hidden : int
        Channels of the encoder's hidden layers.
    clip : float
        Inputs (and reconstruction targets) are clipped to ``[-clip, clip]``,
        so that one bad tick cannot dominate a gradient step.

    Examples
    --------
    >>> import torch
    >>> from finvae.nn import ReturnsVAE
    >>> model = ReturnsVAE(n_assets=5, window=20, latent_dim=3)
    >>> x = torch.randn(8, 20, 5)                  # 8 windows of 20 days, 5 assets
    >>> mu, log_var = model.encode(x)              # a code per day
    >>> mu.shape
    torch.Size([8, 20, 3])
    >>> observed, counted = torch.ones(8, 20, 5, dtype=torch.bool), torch.ones(8, 20, dtype=torch.bool)
    >>> recon, kl = model.elbo_terms(x, observed, counted)     # nats per window
    >>> recon.shape, kl.shape
    (torch.Size([8]), torch.Size([8]))
    """

    def __init__(self, n_assets: int, window: int, latent_dim: int = 3, hidden: int = 32, clip: float = 30.0) -> None:
        super().__init__()
        self.window = window
        self.clip = clip
        self.encoder = CausalConvEncoder(n_assets, window, latent_dim, hidden)
        self.decoder = FactorDecoder(n_assets, latent_dim)
        # One learned noise scale per asset: the Gaussian likelihood's sigma.
        self.log_scale = nn.Parameter(torch.zeros(n_assets))

    def encode(self, x: Tensor, pad: bool = True) -> tuple[Tensor, Tensor]:
        """Posterior mean and log-variance of every day's code (``pad=False``: the days with a full window only)."""
        mu, log_var = self.encoder(x.clamp(-self.clip, self.clip), pad)
        return mu, safe_log_var(log_var)

    def reconstruction_nll(self, decoded: Tensor, x: Tensor, *extra: Tensor) -> Tensor:
        observed = extra[0] if extra else None
        return gaussian_nll(x, decoded, self.log_scale, observed)

    def elbo_terms(self, x: Tensor, observed: Tensor, counted: Tensor) -> tuple[Tensor, Tensor]:
        """Reconstruction NLL and KL in nats per window, averaged over the counted days of each row.

        ``observed`` (batch, days, n_assets) marks the returns that exist;
        ``counted`` (batch, days) the days whose windows are trained on (each
        a window's last day; see :class:`finvae.windows.WindowBatches`).
        """
        x = x.clamp(-self.clip, self.clip)
        # Only the days with a full window are counted, so only their codes are computed.
        mu, log_var = self.encode(x, pad=False)
        full = slice(self.encoder.reach, None)  # the days those codes belong to
        x, observed, weight = x[:, full], observed[:, full], counted[:, full].to(x.dtype)
        decoded = self.decode(reparameterize(mu, log_var) if self.training or self.sample_in_eval else mu)
        recon = self.reconstruction_nll(decoded.flatten(0, 1), x.flatten(0, 1), observed.flatten(0, 1))
        kl = gaussian_kl(mu.flatten(0, 1), log_var.flatten(0, 1))
        n_counted = weight.sum(dim=1).clamp(min=1.0)
        return (recon.view_as(weight) * weight).sum(1) / n_counted, (kl.view_as(weight) * weight).sum(1) / n_counted
