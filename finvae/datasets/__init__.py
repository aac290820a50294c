"""Data sets: the bundled S&P 500 sample, yfinance downloads, returns, and MNIST."""

from finvae.datasets._mnist import load_mnist, load_mnist_idx, read_idx

__all__ = ["load_mnist", "load_mnist_idx", "read_idx"]
