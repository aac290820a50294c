"""The course's convolutional VAE for 28×28 grey-level images (MNIST).

Encoder::

    conv 32 3×3 → conv 64 3×3 stride 2 → conv 64 3×3 → conv 64 3×3 → dense 32
    → z_mean, z_log_var                       (ReLU after every hidden layer)

Decoder::

    dense 14·14·64 → transposed conv 32 3×3 stride 2 → conv 1 3×3 → logits

The decoder returns logits; ``torch.sigmoid`` of them is the mean image. The
likelihood is Bernoulli (binary cross-entropy on [0, 1] intensities), as in the
course and PyTorch's VAE example.
"""

from __future__ import annotations

from numbers import Integral

import torch
from torch import Tensor, nn

from finvae.nn._core import VAE, bernoulli_nll

__all__ = ["ConvVAE"]


class _Encoder(nn.Module):
    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),  # 28×28 → 14×14
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * 14 * 14, 32),
            nn.ReLU(),
        )
        self.z_mean = nn.Linear(32, latent_dim)
        self.z_log_var = nn.Linear(32, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(x)
        return self.z_mean(h), self.z_log_var(h)


class _Decoder(nn.Module):
    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 64 * 14 * 14),
            nn.ReLU(),
            nn.Unflatten(1, (64, 14, 14)),
            # padding=1 with output_padding=1 is Keras' padding="same" for stride 2: 14 → 28.
            nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 1, 3, padding=1),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class ConvVAE(VAE):
    """The course's convolutional VAE for ``(n, 1, 28, 28)`` images in [0, 1].

    Parameters
    ----------
    latent_dim : int, default 2
        Size of the latent code. 2 gives the course's latent-space pictures.

    Notes
    -----
    ``decode(z)`` returns logits of shape ``(n, 1, 28, 28)``; ``torch.sigmoid``
    turns them into the mean image. :meth:`elbo_terms` returns the per-image
    Bernoulli cross-entropy and KL in nats, as for every :class:`finvae.nn.VAE`.

    Examples
    --------
    >>> import torch
    >>> model = ConvVAE(latent_dim=2)
    >>> recon, kl = model.elbo_terms(torch.rand(4, 1, 28, 28))
    >>> recon.shape, kl.shape
    (torch.Size([4]), torch.Size([4]))
    """

    def __init__(self, latent_dim: int = 2) -> None:
        super().__init__()
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, Integral) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        self.latent_dim = latent_dim
        self.encoder = _Encoder(latent_dim)
        self.decoder = _Decoder(latent_dim)
        self._init_weights()
        # Channels-last conv weights make oneDNN's CPU convolutions ~1.3x faster here; the
        # arithmetic is the same, and the format survives .to(device) and load_state_dict.
        self.to(memory_format=torch.channels_last)

    def _init_weights(self) -> None:
        # He initialisation for the layers that feed a ReLU, Glorot (Keras' default) for the
        # output layers, zero biases. PyTorch's default init shrinks the signal layer after
        # layer through this ReLU stack, which costs several epochs at the start.
        outputs = {self.encoder.z_mean, self.encoder.z_log_var, self.decoder.net[-1]}
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                if module in outputs:
                    nn.init.xavier_uniform_(module.weight)
                else:
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and log-variance of ``(n, 1, 28, 28)`` float images in [0, 1]."""
        _check_images(x)
        return super().encode(x)

    def decode(self, z) -> Tensor:
        """Logits of the images for latent points ``z`` (n, latent_dim): a tensor, or an array such as
        :func:`finvae.concepts.shift_codes` gives, read as float32."""
        if not isinstance(z, Tensor):
            weight = self.decoder.net[-1].weight
            z = torch.as_tensor(z, dtype=weight.dtype, device=weight.device)
        elif z.dtype == torch.float64:  # e.g. torch.from_numpy of shifted codes
            z = z.float()
        return super().decode(z)

    def reconstruction_nll(self, decoded: Tensor, x: Tensor, *extra: Tensor) -> Tensor:
        """Bernoulli cross-entropy of ``x`` given the decoder's logits, one value per image."""
        low, high = torch.aminmax(x.detach()) if x.numel() else (0.0, 0.0)
        if low < 0 or high > 1:  # outside [0, 1] the cross-entropy has no minimum: training runs off to -inf
            raise ValueError(f"ConvVAE's Bernoulli likelihood needs images in [0, 1]; got values from {float(low):g} "
                             f"to {float(high):g}. Scale them, e.g. x.float() / 255 for uint8 images.")
        return bernoulli_nll(decoded, x)


def _check_images(x) -> None:
    """A ValueError naming what ConvVAE takes, for input of another type, dtype or shape."""
    if not isinstance(x, Tensor):
        raise ValueError(f"ConvVAE takes a torch tensor of images; got {type(x).__name__}. "
                         "Convert it, e.g. torch.as_tensor(x, dtype=torch.float32).")
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        hint = " (add the channel axis: x.unsqueeze(1))" if tuple(x.shape[1:]) == (28, 28) else \
            " (one grey channel of 28×28 pixels: resize or convert your images)"
        raise ValueError(f"ConvVAE takes images of shape (n, 1, 28, 28); got {tuple(x.shape)}{hint}.")
    if x.dtype != torch.float32:
        raise ValueError(f"ConvVAE takes float32 images in [0, 1]; got dtype {x.dtype}. Convert them, e.g. "
                         "x.float() / 255 for uint8 images, or x.float() for others.")
