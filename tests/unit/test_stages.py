"""One decode, one working copy: the worker's measures all read the same pixels, and each
stage's CPU time is charged to its name."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vitrine.pipeline.inference.decode import _draft_request, decode
from vitrine.pipeline.inference.flatten import reduced_copy, working_copy
from vitrine.pipeline.inference.phash import perceptual_hash
from vitrine.pipeline.inference.preprocess import (
    measure_bytes,
    measured_copy,
    prepare_photo,
    to_model_input,
)
from vitrine.pipeline.inference.quality import measure_quality
from vitrine.pipeline.inference.stages import STAGES, StageClock
from vitrine.pipeline.synthetic.photos import make_product_photo
from vitrine.pipeline.training.datasets import load_fashion_mnist
from vitrine.pipeline.types import ImageLimits, PreprocessSpec
from vitrine.settings import SAMPLE_FASHION_DIR

LIMITS = ImageLimits(max_bytes=40_000_000, max_pixels=40_000_000)


def _photo(fmt: str, seed: int) -> bytes:
    data = load_fashion_mnist(SAMPLE_FASHION_DIR)
    rng = np.random.default_rng(seed)
    img, _ = make_product_photo(data.x_test[seed], rng=rng, size_range=(900, 1400))
    if fmt == "JPEG":
        img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize(("fmt", "seed"), [("JPEG", 1), ("PNG", 2), ("WEBP", 3), ("PNG", 4)])
def test_every_measure_reads_the_one_working_copy(fmt: str, seed: int) -> None:
    """The hash and the quality figures the worker stores are those of the working copy,
    and `vitrine backfill --hashes` (`measure_bytes`) finds the same as the worker: two
    recipes would make false pairs between rows measured by each."""
    blob = _photo(fmt, seed)
    clock = StageClock()
    prepared = prepare_photo(
        blob,
        PreprocessSpec(),
        limits=LIMITS,
        with_phash=True,
        with_quality=True,
        view_size=96,
        clock=clock,
    )
    img, info = decode(blob, limits=LIMITS, draft_size=384, draft_mode="RGB", draft_longest=True)
    work = working_copy(reduced_copy(img, 384), 256)  # one pass over the pixels, then 256 px
    assert max(work.size) == 256 and work.mode == "RGB"
    assert measured_copy(blob, limits=LIMITS)[0].tobytes() == work.tobytes()
    assert prepared.info.phash == perceptual_hash(work)
    assert prepared.info.quality == measure_quality(work, (info.width, info.height))
    assert prepared.info.quality is not None
    assert prepared.info.quality.longest_side_px == max(info.width, info.height)  # header
    assert measure_bytes(blob, limits=LIMITS) == prepared.info
    # explain reads a photo the way the worker does: the same model input
    explained = to_model_input(img, PreprocessSpec(), work_size=256)
    assert np.array_equal(explained, prepared.array)
    assert prepared.view is not None and prepared.view.shape == (96, 96, 3)
    assert set(clock.seconds) == set(STAGES)  # every stage ran and was charged
    assert all(t >= 0 for t in clock.seconds.values())


def test_a_stage_is_charged_its_own_cpu_time() -> None:
    clock = StageClock()
    with clock.stage("busy"):
        sum(i * i for i in range(300_000))
    with clock.stage("idle"):
        pass
    assert clock.seconds["busy"] > 10 * clock.seconds["idle"]


@pytest.mark.parametrize(
    ("size", "longest", "wanted"),
    [
        ((2000, 1500), False, (256, 256)),  # the shorter side keeps 256
        ((2000, 1500), True, (256, 192)),  # the longer side keeps 256, the other in proportion
        ((1500, 2000), True, (192, 256)),
    ],
)
def test_draft_request(size: tuple[int, int], longest: bool, wanted: tuple[int, int]) -> None:
    assert _draft_request(*size, 256, longest) == wanted


def test_a_jpeg_draft_keeps_the_longest_side() -> None:
    """A 2000x1500 JPEG decodes at 1/4 (500x375) for a shorter side of 256, at 1/4 too for
    a longest side of 256 (1/8 would be 250 px): never under what the working copy needs."""
    buf = io.BytesIO()
    Image.new("RGB", (2000, 1500), (200, 100, 50)).save(buf, "JPEG")
    img, info = decode(buf.getvalue(), limits=LIMITS, draft_size=256, draft_longest=True)
    assert max(img.size) >= 256 and (info.width, info.height) == (2000, 1500)
    buf = io.BytesIO()
    Image.new("RGB", (2400, 1200), (200, 100, 50)).save(buf, "JPEG")
    shorter, _ = decode(buf.getvalue(), limits=LIMITS, draft_size=256)
    longer, _ = decode(buf.getvalue(), limits=LIMITS, draft_size=256, draft_longest=True)
    assert shorter.size == (600, 300) and longer.size == (300, 150)
