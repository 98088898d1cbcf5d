"""vitrine.pipeline.training.datasets: IDX files, Fashion-MNIST, the shipped slice and folder
datasets."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from vitrine.pipeline.training.datasets import (
    DEBIAN_DIR,
    FASHION_MNIST_FILES,
    idx_bytes,
    load_fashion_mnist,
    load_idx,
    load_labelled_folder,
    write_idx,
    write_slice,
)
from vitrine.settings import SAMPLE_FASHION_DIR

SLICE = SAMPLE_FASHION_DIR


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-5, 0, 7], dtype=np.int8),
        np.array([[1, -2], [300, 40000]], dtype=np.int32),
        np.linspace(-1, 1, 7, dtype=np.float32),
        np.array([1.5, 2.5], dtype=np.float64),
        np.array([-300, 300], dtype=np.int16),
    ],
)
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_idx_round_trip(tmp_path: Path, arr: np.ndarray, name: str) -> None:
    path = write_idx(tmp_path / name, arr)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = load_idx(path)
    assert back.dtype == arr.dtype and back.dtype.isnative
    np.testing.assert_array_equal(back, arr)


def test_idx_gzip_is_detected_from_content_not_name(tmp_path: Path) -> None:
    arr = np.arange(10, dtype=np.uint8)
    (tmp_path / "plain-but-named.gz").write_bytes(idx_bytes(arr))
    (tmp_path / "gzipped-no-suffix").write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(load_idx(tmp_path / "plain-but-named.gz"), arr)
    np.testing.assert_array_equal(load_idx(tmp_path / "gzipped-no-suffix"), arr)


def test_standard_file_header(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x", np.zeros((3, 28, 28), dtype=np.uint8))
    assert path.read_bytes()[:16] == bytes.fromhex("00000803 00000003 0000001c 0000001c")


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\x00\x00\x99\x01" + b"\x00" * 8, "magic"),
        (b"PK\x03\x04" + b"\x00" * 8, "magic"),
        (b"\x00\x00", "not an IDX file"),
        (bytes.fromhex("00000801 00000005") + b"\x01\x02", "holds 2 bytes"),
        (bytes.fromhex("00000803 00000002"), "truncated"),
    ],
)
def test_bad_idx(tmp_path: Path, blob: bytes, message: str) -> None:
    path = tmp_path / "bad"
    path.write_bytes(blob)
    with pytest.raises(ValueError, match=message):
        load_idx(path)
    path.write_bytes(gzip.compress(blob))
    with pytest.raises(ValueError, match=message):
        load_idx(path)


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(100, np.uint8)))[:30])
    with pytest.raises(ValueError, match="gzip"):
        load_idx(path)


def test_shipped_slice() -> None:
    data = load_fashion_mnist(SLICE)
    assert data.x_train.shape == (3000, 28, 28) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (1000, 28, 28)
    assert np.bincount(data.y_train).tolist() == [300] * 10
    assert np.bincount(data.y_test).tolist() == [100] * 10
    assert data.fingerprint.startswith("sha256:") and len(data.fingerprint) == 7 + 64
    assert sum(p.stat().st_size for p in SLICE.iterdir()) < 2_500_000


def test_fingerprint_stable_and_content_based(tmp_path: Path) -> None:
    original = load_fashion_mnist(SLICE).fingerprint
    assert load_fashion_mnist(SLICE).fingerprint == original
    # same content uncompressed -> same fingerprint (it hashes decompressed bytes)
    plain = tmp_path / "plain"
    plain.mkdir()
    for stem in FASHION_MNIST_FILES:
        (plain / stem).write_bytes(gzip.decompress((SLICE / f"{stem}.gz").read_bytes()))
    assert load_fashion_mnist(plain).fingerprint == original
    # one changed label -> a different fingerprint
    labels = load_idx(plain / "t10k-labels-idx1-ubyte")
    labels[0] = (labels[0] + 1) % 10
    write_idx(plain / "t10k-labels-idx1-ubyte", labels)
    assert load_fashion_mnist(plain).fingerprint != original


def test_missing_dataset_says_where_debian_puts_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        load_fashion_mnist(tmp_path / "nowhere")
    assert str(DEBIAN_DIR) in str(err.value) and "dataset-fashion-mnist" in str(err.value)

    partial = tmp_path / "partial"
    shutil.copytree(SLICE, partial)
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_fashion_mnist(partial)
    message = str(err.value)
    assert "t10k-labels-idx1-ubyte" in message
    assert str(DEBIAN_DIR) in message and "dataset-fashion-mnist" in message


def test_mismatched_lengths(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(SLICE, broken)
    write_idx(broken / "t10k-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="1000 images but 5 labels"):
        load_fashion_mnist(broken)


def test_write_slice(tmp_path: Path) -> None:
    source = load_fashion_mnist(SLICE)
    small = write_slice(SLICE, tmp_path / "a", 4, 2, seed=1)
    assert small.x_train.shape == (40, 28, 28) and small.x_test.shape == (20, 28, 28)
    assert np.bincount(small.y_train).tolist() == [4] * 10
    assert np.bincount(small.y_test).tolist() == [2] * 10
    # every sliced item is a source item with the same label
    source_rows = {
        row.tobytes(): label for row, label in zip(source.x_test, source.y_test, strict=True)
    }
    for row, label in zip(small.x_test, small.y_test, strict=True):
        assert source_rows[row.tobytes()] == label
    # reproducible byte for byte; another seed picks other items
    again = write_slice(SLICE, tmp_path / "b", 4, 2, seed=1)
    for stem in FASHION_MNIST_FILES:
        a = (tmp_path / "a" / f"{stem}.gz").read_bytes()
        assert a == (tmp_path / "b" / f"{stem}.gz").read_bytes()
    assert again.fingerprint == small.fingerprint
    assert write_slice(SLICE, tmp_path / "c", 4, 2, seed=2).fingerprint != small.fingerprint
    with pytest.raises(ValueError, match="only"):
        write_slice(SLICE, tmp_path / "d", 301, 1, seed=0)


def test_full_debian_dataset() -> None:
    """The default location: the full set where Debian's package is installed, otherwise an
    error that names the package (this machine is one or the other; both are checked)."""
    if DEBIAN_DIR.is_dir():
        data = load_fashion_mnist()
        assert data.x_train.shape == (60000, 28, 28) and data.x_test.shape == (10000, 28, 28)
        assert np.bincount(data.y_test).tolist() == [1000] * 10
    else:
        with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist") as err:
            load_fashion_mnist()
        assert str(DEBIAN_DIR) in str(err.value)


def test_load_labelled_folder(tmp_path: Path) -> None:
    root = tmp_path / "shop"
    files = [
        "sneaker/a.jpg",
        "sneaker/B.JPEG",
        "sneaker/sub/c.png",
        "bag/x.webp",
        "bag/w.avif",
        "bag/.hidden.jpg",
        "bag/.thumbs/y.jpg",
        "bag/notes.txt",
        "bag/Thumbs.db",
        ".trash/z.jpg",
        "empty-class/README",
    ]
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    (root / "loose.jpg").write_bytes(b"x")  # not in a class folder

    paths, labels, classes = load_labelled_folder(root)
    assert classes == ("bag", "empty-class", "sneaker")
    assert [p.relative_to(root).as_posix() for p in paths] == [
        "bag/w.avif",
        "bag/x.webp",
        "sneaker/B.JPEG",
        "sneaker/a.jpg",
        "sneaker/sub/c.png",
    ]
    assert labels.tolist() == [0, 0, 2, 2, 2]
    assert labels.dtype == np.int64


def test_load_labelled_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_labelled_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class subfolders"):
        load_labelled_folder(tmp_path)
