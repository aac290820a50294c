"""Exceptions that finvae raises on its own account, and its warnings' placement."""

import os
import sys
import warnings


class DataError(ValueError):
    """Input data that finvae cannot use as given: the message says what and how to fix it."""


class TrainingError(RuntimeError):
    """Training could not go on (for instance the loss became NaN or infinite)."""


def warn_caller(message: str | Warning, category: type[Warning] = UserWarning) -> None:
    """A warning attributed to the caller's line: the first frame outside finvae, sklearn and joblib.

    ``message`` may be a Warning instance (its class then stands for ``category``), as ``warnings.warn`` takes.
    """
    import joblib
    import sklearn

    inside = tuple(os.path.dirname(os.path.abspath(module.__file__)) + os.sep
                   for module in (sys.modules["finvae"], sklearn, joblib))
    frame, level = sys._getframe(1), 2  # stacklevel 2: the caller of warn_caller
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(inside):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
