"""Data sets: the bundled S&P 500 sample, yfinance downloads, returns, and MNIST."""
