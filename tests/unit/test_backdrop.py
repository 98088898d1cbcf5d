"""vitrine.pipeline.inference.backdrop: plain studio backdrops, their vignetting and cast shadows
removed.

Each case is built with a known object mask, so the test checks the mask the lifted
foreground gives, not only that something ran.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from vitrine.pipeline.inference.backdrop import backdrop_level, lift_colour_backdrop
from vitrine.pipeline.inference.preprocess import foreground

H, W = 180, 240


def _object_mask(top: int = 50, left: int = 80, height: int = 80, width: int = 60) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[top : top + height, left : left + width] = True
    return mask


def _photo(backdrop: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """(H, W, 3) uint8: `backdrop` (H, W, 3 float) with the object painted in `colour`."""
    img = backdrop.copy()
    img[mask] = colour
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _flat(colour: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.float32), (H, W, 3)).copy()


def _vignetted(colour: tuple[int, int, int], strength: float) -> np.ndarray:
    ys = (np.arange(H, dtype=np.float32) / (H - 1) - 0.5)[:, None]
    xs = (np.arange(W, dtype=np.float32) / (W - 1) - 0.5)[None, :]
    falloff = 1.0 - strength * (xs * xs + ys * ys) / 0.5
    return falloff[:, :, None] * np.array(colour, np.float32)


def _mask_of(lifted: np.ndarray, threshold: float = 40.0) -> np.ndarray:
    return lifted.max(axis=2) >= threshold


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize(
    ("backdrop", "colour"),
    [
        ((212, 212, 212), (60, 60, 60)),  # light grey sweep, charcoal item
        ((244, 216, 226), (40, 60, 140)),  # pastel pink, navy item
        ((214, 232, 246), (192, 36, 44)),  # pastel blue, red item
        ((246, 240, 226), (104, 68, 42)),  # off-white, brown item
    ],
)
def test_plain_backdrop_is_removed_and_the_object_kept(
    backdrop: tuple[int, int, int], colour: tuple[int, int, int]
) -> None:
    mask = _object_mask()
    fg = 255 - _photo(_flat(backdrop), mask, colour)
    lifted = lift_colour_backdrop(fg)
    assert lifted is not None
    assert lifted[~mask].max() <= 3  # the backdrop is background now
    assert _iou(_mask_of(lifted), mask) >= 0.99
    # the object's darkness relative to its backdrop, per channel
    expected = np.clip((1 - np.array(colour) / np.array(backdrop)) * 255, 0, 255)
    assert np.abs(lifted[mask].mean(axis=0) - expected).max() <= 2


def test_vignetting_is_removed_where_a_constant_level_would_leave_the_corners() -> None:
    mask = _object_mask()
    photo = _photo(_vignetted((238, 236, 230), strength=0.18), mask, (30, 42, 84))
    fg = 255 - photo
    border = np.concatenate([fg[0], fg[-1], fg[:, 0], fg[:, -1]])
    constant = np.median(border, axis=0)
    # what subtracting one level would leave in a corner: darker than the trim threshold
    assert (fg[0, 0].astype(float) - constant).max() > 13
    lifted = lift_colour_backdrop(fg)
    assert lifted is not None
    assert lifted[~mask].max() <= 3
    assert _iou(_mask_of(lifted), mask) >= 0.99


def test_soft_shadow_is_erased_and_the_object_untouched() -> None:
    mask = _object_mask()
    backdrop = _flat((240, 220, 228))
    silhouette = Image.fromarray((mask * 255).astype(np.uint8))
    shadow = (
        np.asarray(
            silhouette.transform(
                silhouette.size, Image.Transform.AFFINE, (1, 0, -8, 0, 1, -6)
            ).filter(ImageFilter.GaussianBlur(5)),
            dtype=np.float32,
        )[:, :, None]
        / 255.0
        * 0.2
    )  # opacity 0.2, offset (8, 6), blurred
    shaded = backdrop * (1 - shadow) + 40.0 * shadow
    fg = 255 - _photo(shaded, mask, (192, 36, 44))
    cast = (shadow[:, :, 0] > 0.03) & ~mask
    assert cast.sum() > 500 and (fg[cast].max(axis=1) > 13).mean() > 0.5  # visible before
    lifted = lift_colour_backdrop(fg)
    assert lifted is not None
    assert (lifted[cast].max(axis=1) <= 13).mean() >= 0.9
    assert _mask_of(lifted)[mask].mean() >= 0.99


def test_grey_item_on_grey_backdrop_is_not_mistaken_for_a_shadow() -> None:
    mask = _object_mask()
    fg = 255 - _photo(_flat((228, 228, 228)), mask, (190, 190, 190))  # ratio 0.83
    lifted = lift_colour_backdrop(fg)
    assert lifted is not None
    assert _iou(lifted.max(axis=2) >= 20, mask) >= 0.99


def test_object_touching_the_border_does_not_bend_the_backdrop() -> None:
    mask = _object_mask(top=60, left=0, height=120, width=90)  # cut off left and bottom
    fg = 255 - _photo(_vignetted((216, 216, 216), 0.1), mask, (22, 22, 24))
    lifted = lift_colour_backdrop(fg)
    assert lifted is not None
    assert lifted[~mask].max() <= 4
    assert _iou(_mask_of(lifted), mask) >= 0.99


def test_white_or_dark_borders_are_left_alone() -> None:
    mask = _object_mask()
    white = 255 - _photo(_flat((255, 255, 255)), mask, (40, 60, 140))
    assert backdrop_level(white) is None and lift_colour_backdrop(white) is None
    dark = 255 - _photo(_flat((90, 90, 90)), mask, (200, 40, 40))  # not a light backdrop
    assert backdrop_level(dark) is None


def test_grey_model_input_sees_no_backdrop() -> None:
    mask = _object_mask()
    photo = _photo(_vignetted((214, 232, 246), 0.15), mask, (64, 92, 134))
    fg = foreground(Image.fromarray(photo), channels=1)
    assert fg.ndim == 2
    assert fg[~mask].max() <= 3
    assert _iou(fg >= 40, mask) >= 0.99
