"""The pieces every finvae VAE shares: sampling, the KL term and the likelihoods.

A VAE maximises the evidence lower bound (ELBO) of each example ``x``::

    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z))

with ``q(z|x) = N(mu(x), diag(exp(log_var(x))))`` and the prior ``p(z) = N(0, I)``.
finvae minimises the negative ELBO, ``reconstruction + beta * KL``, where the
reconstruction term is the negative log-likelihood of ``x`` under the decoder.
All terms are in nats and summed over the dimensions of one example, so that
a loss can be read as "nats per example".
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

#: Log-variances are clamped to this range: exp(-30) ~ 1e-13 and exp(20) ~ 5e8
#: cover any useful posterior, and keep exp() from under- or overflowing.
LOG_VAR_MIN, LOG_VAR_MAX = -30.0, 20.0

_LOG_2PI = math.log(2.0 * math.pi)


def safe_log_var(log_var: Tensor) -> Tensor:
    """Clamp a log-variance to ``[LOG_VAR_MIN, LOG_VAR_MAX]`` (numerically safe exp)."""
    return log_var.clamp(LOG_VAR_MIN, LOG_VAR_MAX)


def reparameterize(mu: Tensor, log_var: Tensor) -> Tensor:
    """Draw ``z ~ N(mu, exp(log_var))`` so that gradients flow to ``mu`` and ``log_var``.

    ``z = mu + exp(0.5 * log_var) * eps`` with ``eps ~ N(0, I)``.

    The factor 0.5 matters: ``exp(0.5 * log_var)`` is the standard deviation.
    The course's pseudo code writes ``exp(z_log_variance) * epsilon``, which
    scales the noise by the *variance*; that still trains, but the encoder
    then learns a different quantity from the one the KL term assumes.

    Examples
    --------
    >>> import math
    >>> import torch
    >>> from finvae.nn import reparameterize
    >>> from finvae.training import seeded
    >>> with seeded(0):
    ...     z = reparameterize(torch.zeros(10_000, 1), torch.full((10_000, 1), math.log(4.0)))
    >>> round(z.std().item(), 1)          # exp(0.5 * log 4) = 2
    2.0
    """
    std = torch.exp(0.5 * log_var)
    return mu + std * torch.randn_like(std)


def gaussian_kl(mu: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mu, exp(log_var)) || N(0, I)) in closed form, summed over every axis but the first.

    ``KL = 0.5 * sum(mu**2 + exp(log_var) - 1 - log_var)``; one value per example
    (a latent code may be a vector, or a vector per day).

    Examples
    --------
    >>> import torch
    >>> from finvae.nn import gaussian_kl
    >>> gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3))     # the prior itself
    tensor([0., 0.])
    >>> gaussian_kl(torch.ones(1, 3), torch.zeros(1, 3))      # 0.5 * (1 + 1 + 1)
    tensor([1.5000])
    """
    return 0.5 * (mu.pow(2) + log_var.exp() - 1.0 - log_var).flatten(1).sum(dim=1)


def bernoulli_nll(logits: Tensor, x: Tensor) -> Tensor:
    """Bernoulli negative log-likelihood (binary cross-entropy) of ``x`` in [0, 1].

    Takes the decoder's logits (more stable than probabilities) and sums over
    every axis but the first: one value per example, in nats. For grey levels
    in [0, 1] this is the cross-entropy that the course and PyTorch's VAE
    example use; it is not a normalised density for non-binary ``x``.
    """
    nll = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return nll.flatten(1).sum(dim=1)


def gaussian_nll(x: Tensor, mean: Tensor, log_scale: Tensor, mask: Tensor | None = None) -> Tensor:
    """Gaussian negative log-likelihood of ``x`` with a (learned) scale, summed per example.

    ``nll = 0.5 * ((x - mean) / scale)**2 + log(scale) + 0.5 * log(2 pi)`` for each
    element, with ``scale = exp(log_scale)`` (``log_scale`` broadcasts against ``x``).
    Where ``mask`` is given, only elements with ``mask == True`` count: missing
    values are left out of the likelihood instead of being filled with a guess.
    ``x`` may hold anything (NaN included) where the mask is False.

    Examples
    --------
    >>> import torch
    >>> from finvae.nn import gaussian_nll
    >>> x, mean, log_scale = torch.tensor([[0.0, float("nan")]]), torch.zeros(1, 2), torch.zeros(2)
    >>> mask = torch.tensor([[True, False]])       # the second value is missing
    >>> round(gaussian_nll(x, mean, log_scale, mask).item(), 4)    # 0.5 * log(2 pi): the first value only
    0.9189
    """
    if mask is not None:
        x = torch.where(mask, x, mean.detach())
    z = (x - mean) * torch.exp(-log_scale)
    nll = 0.5 * z.pow(2) + log_scale + 0.5 * _LOG_2PI
    if mask is not None:
        nll = nll * mask
    return nll.flatten(1).sum(dim=1)


class VAE(nn.Module):
    """A VAE: an encoder to ``(mu, log_var)``, a sampled ``z``, a decoder, and its ELBO terms.

    Subclasses set ``self.encoder`` (returns ``mu, log_var``) and ``self.decoder``,
    and implement :meth:`reconstruction_nll`. The trainer only calls
    :meth:`elbo_terms`, so every finvae model trains with the same loop.

    Examples
    --------
    >>> import torch
    >>> from finvae.nn import VAE, ConvVAE
    >>> model = ConvVAE(latent_dim=2)
    >>> isinstance(model, VAE)
    True
    >>> decoded, z, mu, log_var = model(torch.rand(4, 1, 28, 28))
    >>> decoded.shape, z.shape
    (torch.Size([4, 1, 28, 28]), torch.Size([4, 2]))
    """

    encoder: nn.Module
    decoder: nn.Module

    #: Evaluation samples z from q too (the ELBO is defined with a sample); set
    #: False to decode the posterior mean instead.
    sample_in_eval: bool = True

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and (clamped) log-variance of the latent code of ``x``."""
        mu, log_var = self.encoder(x)
        return mu, safe_log_var(log_var)

    def decode(self, z: Tensor) -> Tensor:
        """The decoder's output for latent points ``z`` (its parameters, e.g. logits)."""
        return self.decoder(z)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Return ``(decoded, z, mu, log_var)`` for a batch, with ``z`` sampled from q."""
        mu, log_var = self.encode(x)
        z = reparameterize(mu, log_var) if self.training or self.sample_in_eval else mu
        return self.decode(z), z, mu, log_var

    def reconstruction_nll(self, decoded: Tensor, x: Tensor, *extra: Tensor) -> Tensor:
        """Negative log-likelihood of ``x`` under the decoder output, one value per example."""
        raise NotImplementedError

    def elbo_terms(self, x: Tensor, *extra: Tensor) -> tuple[Tensor, Tensor]:
        """Per-example reconstruction NLL and KL (both in nats) of a batch.

        ``extra`` carries what a model's likelihood needs beside ``x`` (a mask of
        observed values, for instance). The negative ELBO is their sum. Both are
        computed in float32, also when the networks run under mixed precision.
        """
        decoded, _, mu, log_var = self(x)
        decoded, mu, log_var = decoded.float(), mu.float(), log_var.float()
        return self.reconstruction_nll(decoded, x, *extra), gaussian_kl(mu, log_var)
