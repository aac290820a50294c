"""Run joblib work (e.g. :func:`finvae.backtest.walk_forward`'s refits) on a running Dask scheduler.

Dask is optional (``pip install "finvae[dask]"``): it is imported only here,
and only when asked for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from finvae._exceptions import DataError

__all__ = ["MissingDependencyError", "check_scheduler", "dask_backend", "import_distributed"]

DASK_HINT = 'pip install "finvae[dask]"'


class MissingDependencyError(DataError, ImportError):
    """An optional package is not installed: the message names the ``pip install`` that adds it.

    Both a :class:`~finvae.DataError` (so that the command line prints one
    line and exits 2) and an :class:`ImportError`.
    """


def import_distributed():
    """The ``distributed`` module, or a :class:`MissingDependencyError` naming the extra to install."""
    try:
        import distributed
    except ImportError as exc:
        raise MissingDependencyError(
            f"Running on a Dask cluster needs dask.distributed, which is not installed ({exc}). "
            f"Install it with: {DASK_HINT}"
        ) from exc
    return distributed


_START_HINT = ("Check the address, or start one with `dask scheduler` and its workers with "
               "`dask worker ADDRESS --nthreads 1`.")


async def _identity(address: str, timeout: float) -> object:
    """What answers at ``address`` says it is (a scheduler answers ``{"type": "Scheduler", ...}``)."""
    import asyncio

    from distributed.comm import connect

    comm = await connect(address, timeout=timeout)
    try:
        await asyncio.wait_for(comm.write({"op": "identity", "reply": True}), timeout)
        return await asyncio.wait_for(comm.read(), timeout)
    finally:
        comm.abort()


def _probe(address: str, timeout: float) -> None:
    """DataError unless a Dask scheduler answers at ``address`` within about ``timeout`` seconds.

    Asked before a Client is made: a Client pointed at something else (a web server on a mistyped port, an
    SSH server) can hang, or fail on the bytes it reads, and then spend a minute closing itself. The question
    runs in a thread of its own, with its own event loop, so that it also works where a loop is running
    (a notebook).
    """
    import asyncio
    import threading

    outcome: dict[str, object] = {}

    def ask() -> None:
        try:
            outcome["answer"] = asyncio.run(_identity(address, timeout))
        except BaseException as exc:  # anything at all: a refused port, a bad address, bytes that are no message
            outcome["error"] = exc

    # A daemon thread: one stuck on a server that never answers must not keep the program from exiting.
    asking = threading.Thread(target=ask, name="finvae-dask-probe", daemon=True)
    asking.start()
    asking.join(timeout + 5)
    if asking.is_alive():
        raise DataError(f"No Dask scheduler answered at {address!r} within {timeout:.0f} s. {_START_HINT}")
    if "error" in outcome:
        exc = outcome["error"]
        raise DataError(
            f"Cannot reach a Dask scheduler at {address!r} ({type(exc).__name__}: {str(exc)[:200]}). {_START_HINT}"
        )
    answer = outcome.get("answer")
    if not (isinstance(answer, dict) and answer.get("type") == "Scheduler"):
        raise DataError(f"Something answered at {address!r}, but not a Dask scheduler. {_START_HINT}")


def _connect(distributed, address: str, timeout: float, set_as_default: bool):
    _probe(address, timeout)
    try:
        return distributed.Client(address, timeout=timeout, set_as_default=set_as_default)
    except (OSError, TimeoutError, ValueError) as exc:
        raise DataError(f"Cannot reach a Dask scheduler at {address!r} ({type(exc).__name__}: {exc}). {_START_HINT}") \
            from exc


def check_scheduler(address: str, *, timeout: float = 30.0) -> None:
    """Raise now (:class:`MissingDependencyError` or :class:`~finvae.DataError`) if ``address`` cannot be used."""
    _connect(import_distributed(), address, timeout, set_as_default=False).close()


@contextlib.contextmanager
def dask_backend(address: str, *, timeout: float = 30.0) -> Iterator[object]:
    """Connect to the Dask scheduler at ``address`` and make it joblib's backend inside the block.

    Parameters
    ----------
    address : str
        The scheduler's address, e.g. ``"tcp://10.0.0.5:8786"`` (what
        ``dask scheduler`` prints, or ``LocalCluster().scheduler_address``).
    timeout : float, default=30
        Seconds to wait for the connection.

    Yields
    ------
    distributed.Client
        The client, closed on the way out (the cluster keeps running).

    Raises
    ------
    MissingDependencyError
        If dask.distributed is not installed.
    DataError
        If no scheduler answers at ``address``.

    Examples
    --------
    >>> with dask_backend("tcp://127.0.0.1:8786"):  # doctest: +SKIP
    ...     wf = walk_forward(FinVAE(random_state=0, verbose=0), returns)
    """
    import joblib

    distributed = import_distributed()
    client = _connect(distributed, address, timeout, set_as_default=True)
    try:
        with joblib.parallel_config(backend="dask"):
            yield client
    except (distributed.client.FutureCancelledError, distributed.comm.CommClosedError) as exc:
        raise DataError(  # the scheduler went away mid-run: say so, not a page of tracebacks
            f"Lost the Dask scheduler at {address!r} ({type(exc).__name__}). Refits already finished are kept "
            "where a checkpoint folder was given; start the scheduler again and re-run to resume."
        ) from None
    finally:
        client.close(timeout=5)
