"""Loading the training data: IDX files (Fashion-MNIST) and "one folder per class" sets.

Numpy + the standard library; which file suffixes count as images comes from
`vitrine.pipeline.inference.decode` (next to the formats it accepts), so a folder is indexed by the
same
rules that will decode it. The full Fashion-MNIST comes from the Debian package
`dataset-fashion-mnist` (files in /usr/share/datasets/fashion-mnist/); a small stratified
slice of it lives in `vitrine/data/fashion-mnist-slice/` (made by `write_slice`) so tests and
the demo run on machines without that package.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitrine.pipeline.inference.decode import IMAGE_EXTENSIONS

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"

#: Standard file stems, in the fixed order used for the fingerprint.
FASHION_MNIST_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# IDX type byte -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_IDX_CODES: dict[str, int] = {
    "uint8": 0x08,
    "int8": 0x09,
    "int16": 0x0B,
    "int32": 0x0C,
    "float32": 0x0D,
    "float64": 0x0E,
}
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class FashionMNIST:
    """The four Fashion-MNIST arrays plus a fingerprint of the files they came from."""

    x_train: np.ndarray  # uint8 (N, 28, 28), object bright on black
    y_train: np.ndarray  # uint8 (N,), index into FASHION_MNIST_LABELS
    x_test: np.ndarray
    y_test: np.ndarray
    fingerprint: str  # "sha256:<hex>" over the decompressed files, fixed order


# --------------------------------------------------------------------------- IDX


def _read_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: corrupt gzip stream ({exc})") from exc
    return raw


def parse_idx(data: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """Parse decompressed IDX bytes into a native-endian array (uint8 stays uint8)."""
    if len(data) < 4:
        raise ValueError(f"{name}: not an IDX file (only {len(data)} bytes)")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{name}: not an IDX file (bad magic number 0x{data[:4].hex()}; expected "
            "0x0000 followed by a type byte in 08/09/0B/0C/0D/0E and a dimension count)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name}: truncated IDX header ({len(data)} bytes, need {header})")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{name}: IDX header says shape {shape} ({expected} bytes of data) but the file "
            f"holds {len(data) - header} bytes after the header"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def load_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped or not, detected from the content) into a numpy array.

    Raises FileNotFoundError if missing and ValueError if the content is not IDX.
    """
    path = Path(path)
    return parse_idx(_read_maybe_gzip(path), name=str(path))


def idx_bytes(arr: np.ndarray) -> bytes:
    """Serialise an array to (uncompressed) IDX bytes."""
    arr = np.asarray(arr)
    code = _IDX_CODES.get(arr.dtype.name)
    if code is None:
        raise ValueError(f"IDX cannot store dtype {arr.dtype}")
    if arr.ndim == 0 or arr.ndim > 255:
        raise ValueError(f"IDX needs 1..255 dimensions, got {arr.ndim}")
    header = struct.pack(">HBB", 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: str | Path, arr: np.ndarray) -> Path:
    """Write an IDX file; gzipped (reproducibly, mtime 0) when the name ends in `.gz`."""
    path = Path(path)
    data = idx_bytes(arr)
    if path.suffix == ".gz":
        with (
            path.open("wb") as fh,
            gzip.GzipFile(filename="", mode="wb", fileobj=fh, compresslevel=9, mtime=0) as gz,
        ):
            gz.write(data)
    else:
        path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- Fashion-MNIST


def _find_file(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}.gz (or {stem}) not found in {directory}. "
        f"On Debian/Ubuntu install the package `{DEBIAN_PACKAGE}` "
        f"(apt-get install {DEBIAN_PACKAGE}), which puts the files in {DEBIAN_DIR}/; "
        "a small slice for tests lives in vitrine/data/fashion-mnist-slice/."
    )


def load_fashion_mnist(directory: str | Path = DEBIAN_DIR) -> FashionMNIST:
    """Load the four standard Fashion-MNIST IDX files (`.gz` or plain) from `directory`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"Fashion-MNIST directory {directory} does not exist (looking for "
            f"{FASHION_MNIST_FILES[0]}.gz etc.). On Debian/Ubuntu install the package "
            f"`{DEBIAN_PACKAGE}`, which puts the files in {DEBIAN_DIR}/."
        )
    digest = hashlib.sha256()
    arrays: list[np.ndarray] = []
    for stem in FASHION_MNIST_FILES:
        path = _find_file(directory, stem)
        data = _read_maybe_gzip(path)
        digest.update(data)
        arrays.append(parse_idx(data, name=str(path)))
    x_train, y_train, x_test, y_test = arrays
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.dtype != np.uint8 or x.ndim != 3 or y.dtype != np.uint8 or y.ndim != 1:
            raise ValueError(
                f"{directory}: {name} files have unexpected shape/dtype "
                f"(images {x.dtype}{x.shape}, labels {y.dtype}{y.shape})"
            )
        if len(x) != len(y):
            raise ValueError(f"{directory}: {name} has {len(x)} images but {len(y)} labels")
    return FashionMNIST(x_train, y_train, x_test, y_test, f"sha256:{digest.hexdigest()}")


def _stratified_indices(y: np.ndarray, n_per_class: int, rng: np.random.Generator) -> np.ndarray:
    picked: list[np.ndarray] = []
    for cls in np.unique(y):
        members = np.flatnonzero(y == cls)
        if len(members) < n_per_class:
            raise ValueError(f"class {cls} has only {len(members)} items, need {n_per_class}")
        picked.append(rng.choice(members, size=n_per_class, replace=False))
    return np.sort(np.concatenate(picked))  # keep the original order of the source


def write_slice(
    src_dir: str | Path,
    dst_dir: str | Path,
    n_train_per_class: int,
    n_test_per_class: int,
    seed: int,
) -> FashionMNIST:
    """Write a smaller, class-balanced Fashion-MNIST with the same four `.gz` file names.

    Deterministic for a given source and seed (gzip mtime is 0). Returns the slice as loaded
    back from `dst_dir`.
    """
    src = load_fashion_mnist(src_dir)
    dst = Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    train = _stratified_indices(src.y_train, n_train_per_class, rng)
    test = _stratified_indices(src.y_test, n_test_per_class, rng)
    outputs = (src.x_train[train], src.y_train[train], src.x_test[test], src.y_test[test])
    for stem, arr in zip(FASHION_MNIST_FILES, outputs, strict=True):
        write_idx(dst / f"{stem}.gz", arr)
    return load_fashion_mnist(dst)


# --------------------------------------------------------------------------- folders


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def load_labelled_folder(
    directory: str | Path,
) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """Index a "one subfolder per class" dataset: `directory/<class>/**/<image>`.

    Returns (paths, labels int64 indexing class_names, class_names sorted). Hidden files and
    folders (name starting with ".") and files without an image extension are ignored;
    classes are the non-hidden subfolders, including ones that hold no image.
    """
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset directory {root} does not exist")
    class_names = tuple(
        sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    )
    if not class_names:
        raise ValueError(f"{root} has no class subfolders (expected {root}/<class>/<image>)")
    paths: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(class_names):
        class_dir = root / name
        for path in sorted(class_dir.rglob("*")):
            if (
                path.is_file()
                and path.suffix.lower() in IMAGE_EXTENSIONS
                and not _hidden(path, class_dir)
            ):
                paths.append(path)
                labels.append(index)
    return paths, np.asarray(labels, dtype=np.int64), class_names
