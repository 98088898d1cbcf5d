"""Listing-photo quality end to end: a clean and a defective photo through the real
worker, their `image_quality` rows, the `quality_issues` reasons, thresholds changed by a
setting at query time, and the figures copied when known bytes are reused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from sqlalchemy import Engine, text

from tests.integration.conftest import vitrine
from vitrine.db import repository as repo

pytestmark = pytest.mark.integration


def _photo(path: Path, size: tuple[int, int], box: tuple[int, int, int, int], bg: str) -> Path:
    img = Image.new("RGB", size, bg)
    ImageDraw.Draw(img).ellipse(box, fill=(30, 50, 110))
    img.save(path, "JPEG", quality=92)
    return path


def _submit(env: dict[str, str], *paths: Path, merchant: str) -> dict[str, int]:
    proc = vitrine(env, "submit", *map(str, paths), "--merchant", merchant, "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["results"]
    assert {r["status"] for r in rows} == {"done"}, rows
    return {Path(str(r["uri"]).removeprefix("file://")).name: int(r["image_id"]) for r in rows}


def test_worker_measures_and_the_view_explains(
    pipeline_env, celery_worker_process, clean_db: Engine, tmp_path: Path
) -> None:
    clean = _photo(tmp_path / "clean.jpg", (1200, 1000), (150, 80, 1050, 920), "white")
    bad = _photo(tmp_path / "bad.jpg", (700, 500), (320, 220, 380, 280), "#c8a0a0")
    ids = _submit(pipeline_env, clean, bad, merchant="m-quality")
    with clean_db.connect() as conn:
        rows = {
            r.image_id: r
            for r in conn.execute(
                text("SELECT * FROM image_quality WHERE image_id = ANY(:i)"),
                {"i": list(ids.values())},
            )
        }
        issues = repo.quality_issues(conn, image_ids=list(ids.values()))
    good, poor = rows[ids["clean.jpg"]], rows[ids["bad.jpg"]]
    assert good.longest_side_px == 1200 and good.white_background_share == 1.0
    assert good.touches_border is False and good.object_span > 0.8
    assert poor.longest_side_px == 700 and poor.white_background_share == 0.0
    assert poor.object_span < 0.2
    assert ids["clean.jpg"] not in issues
    reasons, details = issues[ids["bad.jpg"]]
    assert reasons == ["small_image", "background_not_white", "product_too_small"]
    assert "longest side 700 px, under 1000" in details and details.count("; ") == 2

    with clean_db.connect() as conn:  # thresholds are settings, read when the view is
        conn.execute(text("SET vitrine.quality_min_side = '1600'"))
        stricter = repo.quality_issues(conn, image_ids=[ids["clean.jpg"]])
    assert stricter[ids["clean.jpg"]][0] == ["small_image"]

    copy = tmp_path / "copy" / "bad.jpg"  # the same bytes, another shop: reused, copied
    copy.parent.mkdir()
    copy.write_bytes(bad.read_bytes())
    (reused,) = _submit(pipeline_env, copy, merchant="m-quality-2").values()
    with clean_db.connect() as conn:
        copied = conn.execute(
            text("SELECT * FROM image_quality WHERE image_id = :i"), {"i": reused}
        ).one()
    assert copied.object_span == poor.object_span and copied.sharpness == poor.sharpness
