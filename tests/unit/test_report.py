"""vitrine.pipeline.evaluation.report: contact sheets and confusion-matrix pictures (Pillow
only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from vitrine.pipeline.evaluation.report import confusion_matrix_image, contact_sheet
from vitrine.pipeline.types import FASHION_MNIST_LABELS

# Layout constants of contact_sheet (caption_h, gap, pad) and confusion_matrix_image (margins).
CAPTION_H, GAP, PAD = 30, 24, 6
LEFT = TOP = 110


def _tiles() -> list[Image.Image]:
    """Tiles in the modes uploads come in: RGB, grey, transparent RGBA, palette, wide."""
    transparent = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    transparent.paste((200, 0, 0, 255), (10, 10, 30, 30))
    return [
        Image.new("RGB", (50, 50), (10, 120, 10)),
        Image.new("L", (28, 28), 80),
        transparent,
        Image.new("P", (30, 60), 3),
        Image.new("RGB", (200, 20), (0, 0, 200)),
        Image.new("LA", (16, 16), (50, 255)),
    ]


def test_contact_sheet_size_for_two_rows_of_three_neighbours() -> None:
    tiles = _tiles()
    thumb = 64
    rows = [
        ((tiles[0], "query one"), [(tiles[1], "n1"), (tiles[2], "n2"), (tiles[3], "n3")]),
        ((tiles[4], "query two\nsecond line"), [(tiles[5], "a"), (tiles[0], "b"), (tiles[1], "c")]),
    ]
    sheet = contact_sheet(rows, thumb=thumb)
    cols = 1 + 3
    assert sheet.mode == "RGB"
    assert sheet.size == (
        PAD + cols * (thumb + PAD) + GAP,  # 6 + 4 * 70 + 24 = 310
        PAD + 2 * (thumb + CAPTION_H + PAD),  # 6 + 2 * 100 = 206
    )
    assert sheet.size == (310, 206)
    # The first query's (uniform green) thumbnail sits at (PAD, PAD).
    centre = (PAD + thumb // 2, PAD + thumb // 2)
    assert sheet.getpixel(centre) == (10, 120, 10)
    # Transparent pixels are composited onto white, not black.
    third_tile_x = PAD + 2 * (thumb + PAD) + GAP
    assert sheet.getpixel((third_tile_x + 1, PAD + 1)) == (255, 255, 255)


def test_contact_sheet_rows_of_different_lengths_and_empty() -> None:
    tiles = _tiles()
    rows = [((tiles[0], "q"), [(tiles[1], "n")]), ((tiles[2], "q2"), [])]
    sheet = contact_sheet(rows, thumb=32)
    assert sheet.size == (PAD + 2 * (32 + PAD) + GAP, PAD + 2 * (32 + CAPTION_H + PAD))
    empty = contact_sheet([], thumb=32)
    assert empty.width > 0 and empty.height >= 32


def test_confusion_matrix_image_for_ten_labels() -> None:
    labels = FASHION_MNIST_LABELS
    n, cell = len(labels), 48
    matrix = np.diag(np.arange(1, n + 1))
    matrix[0, 1] = 1  # row 0: share 1/2 on the diagonal and 1/2 off it
    matrix[9, :] = 0  # a class with no test items must not divide by zero
    img = confusion_matrix_image(matrix, labels, cell=cell)
    assert img.size == (LEFT + n * cell + 10, TOP + n * cell + 10) == (600, 600)

    def corner(i: int, j: int) -> tuple[int, ...]:
        # top-right inside the cell, away from the count drawn at the left
        return img.getpixel((LEFT + j * cell + cell - 4, TOP + i * cell + 3))

    assert corner(3, 3) == (55, 55, 255)  # whole row on the diagonal: darkest blue
    assert corner(3, 4) == (255, 255, 255)  # nothing off the diagonal: white
    assert corner(0, 0) == (155, 155, 255)  # half the row: 255 - 200 * 0.5
    assert corner(0, 1) == (255, 155, 155)  # half the row, wrong: red
    assert corner(9, 9) == (255, 255, 255)  # empty row


def test_pictures_save_as_png(tmp_path: Path) -> None:
    tiles = _tiles()
    sheet = contact_sheet([((tiles[0], "q"), [(t, "n") for t in tiles[1:4]])] * 2, thumb=48)
    matrix_img = confusion_matrix_image(np.eye(10, dtype=np.int64) * 7, FASHION_MNIST_LABELS)
    for name, img in (("sheet.png", sheet), ("matrix.png", matrix_img)):
        path = tmp_path / name
        img.save(path)
        with Image.open(path) as back:
            assert back.format == "PNG"
            assert back.size == img.size
            back.load()
            assert np.array_equal(np.asarray(back.convert("RGB")), np.asarray(img))
