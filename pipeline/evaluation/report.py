"""Pictures people look at: neighbour contact sheets and confusion matrices (Pillow only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

Tile = tuple[Image.Image, str]


def _thumb(img: Image.Image, size: int) -> Image.Image:
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, "white")
        img = Image.alpha_composite(white, rgba)
    img = img.convert("RGB")
    img.thumbnail((size, size))
    canvas = Image.new("RGB", (size, size), "white")
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return canvas


def contact_sheet(rows: Sequence[tuple[Tile, Sequence[Tile]]], *, thumb: int = 128) -> Image.Image:
    """One row per query: the query tile, a gap, then its neighbours, each captioned."""
    font = ImageFont.load_default()
    caption_h, gap, pad = 30, 24, 6
    cols = 1 + max((len(n) for _, n in rows), default=0)
    width = pad + cols * (thumb + pad) + gap
    height = pad + len(rows) * (thumb + caption_h + pad)
    sheet = Image.new("RGB", (width, max(height, thumb)), (240, 240, 240))
    draw = ImageDraw.Draw(sheet)
    for r, (query, neighbours) in enumerate(rows):
        y = pad + r * (thumb + caption_h + pad)
        for c, (img, caption) in enumerate([query, *neighbours]):
            x = pad + c * (thumb + pad) + (gap if c else 0)
            sheet.paste(_thumb(img, thumb), (x, y))
            if c == 0:
                draw.rectangle(
                    [x - 2, y - 2, x + thumb + 1, y + thumb + 1], outline=(30, 90, 200), width=2
                )
            for line_no, line in enumerate(caption.split("\n")[:2]):
                draw.text(
                    (x, y + thumb + 2 + 13 * line_no), line[:22], fill=(20, 20, 20), font=font
                )
    return sheet


def confusion_matrix_image(
    matrix: np.ndarray, labels: Sequence[str], *, cell: int = 48
) -> Image.Image:
    """Rows are true classes, columns predictions; cells shaded by row-normalised share."""
    font = ImageFont.load_default()
    n = len(labels)
    left, top = 110, 110
    img = Image.new("RGB", (left + n * cell + 10, top + n * cell + 10), "white")
    draw = ImageDraw.Draw(img)
    totals = matrix.sum(axis=1, keepdims=True).clip(min=1)
    share = matrix / totals
    for i in range(n):
        draw.text((4, top + i * cell + cell // 2 - 6), labels[i][:16], fill="black", font=font)
        label_img = Image.new("RGB", (100, 14), "white")
        ImageDraw.Draw(label_img).text((0, 0), labels[i][:16], fill="black", font=font)
        img.paste(label_img.rotate(90, expand=True), (left + i * cell + cell // 2 - 7, 4))
        for j in range(n):
            v = float(share[i, j])
            shade = int(255 - 200 * v)
            colour = (shade, shade, 255) if i == j else (255, shade, shade)
            x0, y0 = left + j * cell, top + i * cell
            draw.rectangle(
                [x0, y0, x0 + cell - 1, y0 + cell - 1], fill=colour, outline=(200, 200, 200)
            )
            if matrix[i, j]:
                draw.text(
                    (x0 + 4, y0 + cell // 2 - 6), str(int(matrix[i, j])), fill="black", font=font
                )
    draw.text((left, top + n * cell - 2), "", fill="black")
    return img
