"""finvae: variational autoencoders for financial time series."""

from finvae._exceptions import DataError, TrainingError

__version__ = "0.1.0"

__all__ = ["DataError", "TrainingError", "__version__"]
