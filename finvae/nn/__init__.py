"""Neural-network building blocks: the shared VAE core and finvae's models."""

from finvae.nn._core import (
    LOG_VAR_MAX,
    LOG_VAR_MIN,
    VAE,
    bernoulli_nll,
    gaussian_kl,
    gaussian_nll,
    reparameterize,
    safe_log_var,
)
from finvae.nn._mnist import ConvVAE
from finvae.nn._returns import ReturnsVAE

__all__ = [
    "ConvVAE",
    "LOG_VAR_MAX",
    "LOG_VAR_MIN",
    "ReturnsVAE",
    "VAE",
    "bernoulli_nll",
    "gaussian_kl",
    "gaussian_nll",
    "reparameterize",
    "safe_log_var",
]
