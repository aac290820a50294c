"""Exceptions that finvae raises on its own account."""


class DataError(ValueError):
    """Input data that finvae cannot use as given: the message says what and how to fix it."""


class TrainingError(RuntimeError):
    """Training could not go on (for instance the loss became NaN or infinite)."""
