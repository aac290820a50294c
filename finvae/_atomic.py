"""Atomic file writes: write beside the target, then rename over it.

Every file that finvae writes for a user (CSV tables, figures, the report, a
model's files, walk-forward checkpoints) goes through :func:`atomic_path`: the
content goes to a temporary file in the target's folder, is flushed to disk,
and only then takes the target's name with :func:`os.replace`, which is atomic
within one folder. A crash or an error mid-write leaves the previous file as it
was (or no file), never half a file; the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

__all__ = ["atomic_folder", "atomic_path", "remove_leftovers", "write_csv", "write_text"]


def _read_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


#: Read once, at import: ``os.umask`` can only be read by setting it, which must not race other threads' writes.
UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` if the block ends without error.

    The temporary name starts with a dot and keeps ``path``'s suffix (matplotlib
    reads a figure's format from it). On an error it is removed and the error
    propagates; ``path`` is untouched.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from finvae._atomic import atomic_path
    >>> target = Path(tempfile.mkdtemp()) / "table.csv"
    >>> with atomic_path(target) as temporary:
    ...     _ = temporary.write_text("a,b\\n1,2\\n")
    >>> target.read_text()
    'a,b\\n1,2\\n'
    """
    target = Path(os.path.realpath(path))  # a link is followed: the file it points to is replaced, not the link
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        with open(temporary, "rb+") as file:  # on disk before it takes the name: a power cut loses no finished file
            os.fsync(file.fileno())
        try:  # the replaced file's mode is kept (a group-only 0640 stays so); a new file gets the usual one
            mode = os.stat(target).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~UMASK  # mkstemp's file is private; the result is an ordinary file
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """A new, empty folder beside ``path`` to fill; it takes ``path``'s place if the block ends without error.

    A folder already at ``path`` is replaced (moved aside, then deleted). On an
    error the new folder is deleted and ``path`` is untouched. Used for model
    folders, whose files must be read together.
    """
    target = Path(os.path.realpath(path))  # a link is followed: the folder it points to is replaced
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~UMASK)  # mkdtemp's folder is private; the result is an ordinary folder
        if target.exists():
            old = staging.with_name(staging.name + ".old")
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)  # the new folder is in place: a failed clean-up is no failure
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_text(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path`` as a Path."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def write_csv(frame: pd.DataFrame | pd.Series, path: str | os.PathLike, **to_csv) -> Path:
    """``frame.to_csv(path, **to_csv)``, atomically; returns ``path`` as a Path."""
    with atomic_path(path) as temporary:
        frame.to_csv(temporary, **to_csv)
    return Path(path)


def remove_leftovers(folder: str | os.PathLike, names: list[str]) -> int:
    """Delete the temporary files that :func:`atomic_path` left beside each of ``names`` in ``folder``.

    A process killed outright (SIGKILL, a power cut) cannot remove its temporary file; the next run that
    writes the same file calls this once it is done. Returns how many were removed.
    """
    removed = 0
    for name in names:
        target = Path(name)
        for leftover in Path(folder).glob(f".{glob.escape(target.name)}.*.tmp{glob.escape(target.suffix)}"):
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed
