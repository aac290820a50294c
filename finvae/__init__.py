"""finvae: variational autoencoders for financial time series.

``FinVAE().fit(returns)`` learns a 1-D convolutional VAE on rolling windows of
daily returns; its latent means act as risk factors (``transform``) and its
surprise on each day as an anomaly score (``score``, ``predict``).
"""

from finvae._exceptions import DataError, TrainingError
from finvae.estimator import FinVAE, elbo_scorer

__version__ = "0.1.0"

# FinVAECovariance (needs the optional skfolio) is reached as finvae.FinVAECovariance, not by `import *`.
__all__ = ["DataError", "FinVAE", "TrainingError", "__version__", "elbo_scorer"]


#: Submodules reachable as ``finvae.<name>`` after a plain ``import finvae``, imported on first use.
_SUBMODULES = ("backtest", "concepts", "datasets", "factors", "plotting", "report", "risk", "scoring", "simulation",
               "training", "windows")


def __getattr__(name: str):
    # skfolio is optional: FinVAECovariance is imported on first use, so finvae imports without it.
    if name == "FinVAECovariance":
        from finvae._skfolio import FinVAECovariance

        return FinVAECovariance
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"finvae.{name}")
    raise AttributeError(f"module 'finvae' has no attribute {name!r}")
