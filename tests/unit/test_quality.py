"""Listing-photo quality: each measurement and rule on synthetic images, the worker's
single decode, and the Python defaults equal to the SQL view's (migration 0007)."""

from __future__ import annotations

import dataclasses
import importlib.util
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from vitrine.db.migrate import MIGRATIONS_DIR
from vitrine.pipeline.inference.preprocess import preprocess_bytes
from vitrine.pipeline.inference.quality import (
    REASONS,
    QualityRules,
    failed_rules,
    measure_quality,
    rule_names,
)
from vitrine.pipeline.synthetic.quality_set import DEFECTS, RULES_OF, quality_photos
from vitrine.pipeline.types import ImageLimits, ImageQuality, PreprocessSpec
from vitrine.settings import Settings

LIMITS = ImageLimits(max_bytes=40 << 20, max_pixels=40_000_000)


def _photo(
    size: tuple[int, int] = (1200, 1200),
    box: tuple[float, float, float, float] = (0.15, 0.1, 0.85, 0.9),
    colour: tuple[int, int, int] = (40, 60, 120),
    backdrop: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """A product (an ellipse with a stripe) on a plain backdrop; `box` in frame fractions."""
    img = Image.new("RGB", size, backdrop)
    w, h = size
    x0, y0, x1, y1 = box[0] * w, box[1] * h, box[2] * w, box[3] * h
    draw = ImageDraw.Draw(img)
    draw.ellipse((x0, y0, x1, y1), fill=colour)
    draw.rectangle((x0 + (x1 - x0) * 0.4, y0, x0 + (x1 - x0) * 0.6, y1), fill=(200, 40, 40))
    return img


def _measure(img: Image.Image) -> ImageQuality:
    return measure_quality(img, img.size)


def test_clean_photo_passes_every_rule() -> None:
    q = _measure(_photo())
    assert q.longest_side_px == 1200 and q.white_background_share == 1.0
    assert q.touches_border is False and q.object_span == pytest.approx(0.8, abs=0.02)
    assert q.fill_ratio == pytest.approx(0.7 * 0.8, abs=0.03)
    assert failed_rules(q, QualityRules()) == ()


def test_longest_side_is_the_uploads_not_the_drafts() -> None:
    """A JPEG arrives as a reduced draft: the rule must judge the file's own size."""
    buf = io.BytesIO()
    _photo((2400, 1800)).save(buf, "JPEG", quality=90)
    _, info = preprocess_bytes(buf.getvalue(), PreprocessSpec(), limits=LIMITS, with_quality=True)
    assert info.quality is not None and info.quality.longest_side_px == 2400
    _, small = preprocess_bytes(buf.getvalue(), PreprocessSpec(), limits=LIMITS)
    assert small.quality is None  # measured only where asked (the worker)
    q = _measure(_photo((800, 600)))
    assert failed_rules(q, QualityRules()) == ("small_image",)


def test_coloured_and_cluttered_backgrounds() -> None:
    q = _measure(_photo(backdrop=(200, 220, 240)))
    assert q.white_background_share == 0.0 and q.object_span is not None
    assert failed_rules(q, QualityRules()) == ("background_not_white",)
    busy = _photo()
    draw = ImageDraw.Draw(busy)
    rng = np.random.default_rng(0)
    for _ in range(60):
        x, y = (int(v) for v in rng.integers(0, 1200, size=2))
        draw.rectangle(
            (x, y, x + 200, y + 150), fill=tuple(int(c) for c in rng.integers(0, 200, 3))
        )
    q = _measure(busy)
    assert q.white_background_share < 0.9
    assert q.object_span is None and q.touches_border is None  # no object on a scene
    assert "background_not_white" in failed_rules(q, QualityRules())


def test_tiny_and_cut_off_products_and_specks() -> None:
    q = _measure(_photo(box=(0.4, 0.4, 0.6, 0.65)))
    assert q.object_span == pytest.approx(0.25, abs=0.02)
    assert failed_rules(q, QualityRules()) == ("product_too_small",)
    cut = _measure(_photo(box=(0.3, 0.2, 1.2, 0.9)))  # past the right edge
    assert cut.touches_border is True
    assert failed_rules(cut, QualityRules()) == ("product_cut_off",)
    specks = _photo()
    for x in (5, 600, 1190):  # dust at the edge does not make the product cut off
        specks.putpixel((x, 3), (0, 0, 0))
    assert _measure(specks).touches_border is False


def test_blur_lowers_sharpness_whatever_the_size() -> None:
    sharp, big = _measure(_photo()), _measure(_photo((3000, 3000)))
    assert abs(sharp.sharpness - big.sharpness) < 0.25 * sharp.sharpness  # fixed working size
    blurred = _measure(_photo().filter(ImageFilter.GaussianBlur(30)))
    assert blurred.sharpness < QualityRules().min_sharpness < sharp.sharpness
    assert failed_rules(blurred, QualityRules()) == ("blurry",)


def test_exposure() -> None:
    dark = Image.eval(_photo(), lambda v: int(v * 0.45))
    q = _measure(dark)
    assert q.highlight_luminance < QualityRules().min_highlight
    assert set(failed_rules(q, QualityRules())) == {"too_dark", "background_not_white"}
    light = _measure(_photo(colour=(235, 235, 200)))
    assert light.object_luminance is not None and light.object_luminance > 180
    washed = dataclasses.replace(light, object_luminance=250.0)  # a product blown out
    assert failed_rules(washed, QualityRules()) == ("too_bright",)
    assert failed_rules(washed, QualityRules(max_object_luminance=251.0)) == ()


def test_transparent_cut_out_is_judged_on_white() -> None:
    rgba = _photo().convert("RGBA")
    alpha = Image.new("L", rgba.size, 0)
    ImageDraw.Draw(alpha).ellipse((180, 120, 1020, 1080), fill=255)
    rgba.putalpha(alpha)
    q = _measure(rgba)
    assert q.white_background_share == 1.0 and failed_rules(q, QualityRules()) == ()


def test_rules_settings_and_sql_defaults_are_one() -> None:
    """The view's defaults (migration 0007) and the settings' equal `QualityRules`'."""
    path = next(MIGRATIONS_DIR.glob("versions/0007_*.py"))
    spec = importlib.util.spec_from_file_location("m0007", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rules = QualityRules()
    assert set(module.DEFAULTS) == set(rule_names())
    for name, (_, literal) in module.DEFAULTS.items():
        assert float(literal) == float(getattr(rules, name)), name
        assert f"current_setting('vitrine.quality_{name}', true)" in module.VIEW
    assert Settings().quality_rules == rules
    assert Settings(quality_min_side=1600).quality_rules.min_side == 1600
    for code in REASONS:
        assert f"'{code}'" in module.VIEW


def test_generated_set_has_every_defect_with_its_rules() -> None:
    items = np.zeros((len(DEFECTS), 28, 28), np.uint8)
    items[:, 4:24, 8:20] = 200
    photos = list(quality_photos(items, seed=3))
    assert [p.defect for p in photos[1::2]] == list(DEFECTS)
    assert all(p.defect is None and p.expected == () for p in photos[::2])
    rules = QualityRules()
    for photo in photos:
        _, info = preprocess_bytes(photo.data, PreprocessSpec(), limits=LIMITS, with_quality=True)
        assert info.quality is not None
        assert set(failed_rules(info.quality, rules)) == set(photo.expected), photo.defect
    assert set(RULES_OF) == set(DEFECTS)
    assert dataclasses.is_dataclass(ImageQuality)
