"""vitrine.pipeline.inference.upright: a tilted product is stood upright, an upright or round one
left alone."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vitrine.pipeline.inference.upright import stand_upright, tilt_degrees


def _canvas() -> Image.Image:
    return Image.new("L", (220, 220), 0)


def _trousers(tilt: float) -> np.ndarray:
    img = _canvas()
    ImageDraw.Draw(img).rectangle((85, 40, 135, 180), fill=200)
    return np.asarray(img.rotate(tilt, resample=Image.Resampling.BILINEAR))


@pytest.mark.parametrize("tilt", [-14.0, -7.0, 6.0, 12.0])
def test_tilt_is_found_and_undone(tilt: float) -> None:
    tilted = _trousers(tilt)
    found = tilt_degrees(tilted)
    assert abs(found - tilt) <= 1.5
    upright = stand_upright(tilted, found)
    assert tilt_degrees(upright) == 0.0
    ys, xs = np.nonzero(upright >= 50)
    assert (xs.max() - xs.min()) <= 55  # as narrow as the untilted item (51 px)


def test_upright_and_round_items_are_left_alone() -> None:
    assert tilt_degrees(_trousers(0.0)) == 0.0
    disc = _canvas()
    ImageDraw.Draw(disc).ellipse((40, 40, 180, 180), fill=200)
    assert tilt_degrees(np.asarray(disc)) == 0.0
    assert tilt_degrees(np.zeros((50, 50), np.uint8)) == 0.0


def test_stand_upright_keeps_every_pixel() -> None:
    tilted = _trousers(10.0)
    turned = stand_upright(tilted, 10.0)
    assert turned.shape[0] > tilted.shape[0] and turned.shape[1] > tilted.shape[1]
    assert abs(float(turned.sum()) - float(tilted.sum())) / float(tilted.sum()) < 0.02
    assert stand_upright(tilted, 0.0) is tilted
