"""vitrine.pipeline.inference.batch: read -> preprocess -> stack, each failure kept against its own
key."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vitrine.pipeline.inference.batch import PreparedBatch, failure_reason, prepare_batch
from vitrine.pipeline.inference.decode import BadImageError
from vitrine.pipeline.inference.preprocess import preprocess_bytes
from vitrine.pipeline.types import ImageLimits, PreprocessSpec

SPEC = PreprocessSpec()
LIMITS = ImageLimits(max_bytes=10**7, max_pixels=10**7)


def _product(fmt: str, box: tuple[int, int, int, int]) -> bytes:
    """A dark rectangle on a white 'photo', encoded as `fmt`."""
    img = Image.new("RGB", (120, 90), "white")
    ImageDraw.Draw(img).rectangle(box, fill=(30, 30, 40))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def folder(tmp_path: Path) -> dict[str, Path]:
    """Two good images, a corrupt JPEG and a file that is not there."""
    good_png = _product("PNG", (20, 10, 60, 80))
    good_jpeg = _product("JPEG", (50, 30, 110, 60))
    files = {
        "a.png": good_png,
        "broken.jpg": good_jpeg[: len(good_jpeg) // 3],
        "b.jpg": good_jpeg,
    }
    for name, blob in files.items():
        (tmp_path / name).write_bytes(blob)
    paths = {name: tmp_path / name for name in files}
    paths["missing.jpg"] = tmp_path / "missing.jpg"
    return paths


def test_good_images_are_stacked_in_input_order_and_failures_kept(
    folder: dict[str, Path],
) -> None:
    order = ["broken.jpg", "a.png", "missing.jpg", "boom.png", "b.jpg"]

    def read(name: str) -> bytes:
        if name == "boom.png":
            raise RuntimeError("disk on fire")
        return folder[name].read_bytes()

    batch = prepare_batch(order, read, SPEC, LIMITS)

    assert isinstance(batch, PreparedBatch)
    assert batch.keys == ["a.png", "b.jpg"]
    assert batch.arrays.dtype == np.float32 and batch.arrays.shape == (2, 28, 28, 1)
    for row, name, info in zip(batch.arrays, batch.keys, batch.infos, strict=True):
        array, expected_info = preprocess_bytes(folder[name].read_bytes(), SPEC, limits=LIMITS)
        np.testing.assert_array_equal(row, array)
        assert info == expected_info
    assert [i.format for i in batch.infos] == ["PNG", "JPEG"]
    assert [(i.width, i.height) for i in batch.infos] == [(120, 90), (120, 90)]

    assert list(batch.failures) == ["broken.jpg", "missing.jpg", "boom.png"]  # input order
    broken = batch.failures["broken.jpg"]
    assert isinstance(broken, BadImageError)
    assert failure_reason(broken).startswith("truncated or corrupt JPEG")
    assert isinstance(batch.failures["missing.jpg"], FileNotFoundError)
    assert failure_reason(batch.failures["missing.jpg"]) == "file not found: missing.jpg"
    assert isinstance(batch.failures["boom.png"], RuntimeError)
    assert (
        failure_reason(batch.failures["boom.png"])
        == "could not process image: RuntimeError: disk on fire"
    )


def test_paths_as_keys_and_limits_apply(folder: dict[str, Path]) -> None:
    paths = [folder["a.png"], folder["b.jpg"]]
    small = ImageLimits(max_bytes=10**7, max_pixels=100 * 80)  # 120x90 is over
    batch = prepare_batch(paths, Path.read_bytes, SPEC, small)
    assert batch.keys == [] and batch.infos == []
    assert batch.arrays.shape == (0, 28, 28, 1)
    assert list(batch.failures) == paths
    assert all(
        failure_reason(e) == "image is 120x90 = 0.0108 Mpx, over the 0.008 Mpx limit"
        for e in batch.failures.values()
    )


@pytest.mark.parametrize(
    "spec",
    [SPEC, PreprocessSpec(size=64, channels=3, invert=False, scale=1.0)],
    ids=["default", "rgb64"],
)
def test_empty_input_gives_an_empty_batch_of_the_spec_shape(spec: PreprocessSpec) -> None:
    def never(key: int) -> bytes:
        raise AssertionError("nothing to read")

    batch: PreparedBatch[int] = prepare_batch([], never, spec, LIMITS)
    assert batch.keys == [] and batch.infos == [] and batch.failures == {}
    assert batch.arrays.dtype == np.float32
    assert batch.arrays.shape == (0, spec.size, spec.size, spec.channels)


def test_preprocessing_errors_are_recorded_too(folder: dict[str, Path]) -> None:
    """Not only BadImageError: anything preprocessing raises fails that key alone."""
    bad_spec = PreprocessSpec(channels=2)
    batch = prepare_batch(iter([folder["a.png"]]), Path.read_bytes, bad_spec, LIMITS)
    assert batch.keys == []
    (exc,) = batch.failures.values()
    assert (
        failure_reason(exc) == "could not process image: ValueError: channels must be 1 or 3, got 2"
    )


def test_interrupts_are_not_swallowed(folder: dict[str, Path]) -> None:
    def interrupted(key: str) -> bytes:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_batch(["a.png"], interrupted, SPEC, LIMITS)


def test_failure_reason_words(tmp_path: Path) -> None:
    assert failure_reason(BadImageError("empty file")) == "empty file"
    with pytest.raises(IsADirectoryError) as err:
        tmp_path.read_bytes()
    assert failure_reason(err.value) == f"is a directory, not a file: {tmp_path.name}"
    denied = PermissionError(13, "Permission denied", "/srv/uploads/secret.jpg")
    assert failure_reason(denied) == "permission denied: secret.jpg"
    assert failure_reason(FileNotFoundError("gone.jpg")) == "file not found: gone.jpg"
    assert failure_reason(ValueError("odd")) == "could not process image: ValueError: odd"
