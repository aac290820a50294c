"""Data sets: the bundled S&P 500 sample, yfinance downloads, returns, and MNIST."""

from finvae.datasets._market import (
    download_prices,
    load_returns,
    load_sp500_sample,
    looks_like_prices,
    prices_to_returns,
)
from finvae.datasets._mnist import RandomShifts, load_mnist, load_mnist_idx, read_idx

__all__ = ["RandomShifts", "load_mnist", "load_mnist_idx", "read_idx"]
__all__ += ["download_prices", "load_returns", "load_sp500_sample", "looks_like_prices", "prices_to_returns"]
