"""`vitrine explain` as a user runs it, on images the real worker ingested: one picture,
top-3 labels, five training images as evidence; an unknown id is one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import Engine

from tests.integration.conftest import vitrine

pytestmark = pytest.mark.integration


def test_explain_a_stored_image(  # type: ignore[no-untyped-def]
    pipeline_env, celery_worker_process, clean_db: Engine, catalog, tmp_path: Path
) -> None:
    directory, truth = catalog
    photo = sorted(p for p in directory.iterdir() if p.name in truth)[0]
    submitted = vitrine(pipeline_env, "submit", str(photo), "--merchant", "m-x", "--wait", "--json")
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    (image,) = json.loads(submitted.stdout)["results"]
    assert image["status"] == "done"

    png = tmp_path / "why.png"
    proc = vitrine(pipeline_env, "explain", str(image["image_id"]), "--png", str(png), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    found = json.loads(proc.stdout)
    assert len(found["top_k"]) == 3
    assert found["top_k"][0]["label"] == found["label"]
    assert sum(t["score"] for t in found["top_k"]) <= 1.0 + 1e-3
    assert len(found["neighbours"]) == 5
    assert all(0.0 <= n["distance"] <= 2.0 for n in found["neighbours"])
    assert "training images" in found["training_set"]
    assert found["png"] == str(png)
    with Image.open(png) as img:
        assert img.format == "PNG" and img.width >= 500 and img.height >= 300
    assert 10_000 < png.stat().st_size < 1_000_000

    plain = vitrine(pipeline_env, "explain", "--image", str(photo))  # cached pool, no picture
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert found["label"] in plain.stdout


def test_an_unknown_image_is_one_line_and_exit_2(pipeline_env, clean_db: Engine) -> None:  # type: ignore[no-untyped-def]
    proc = vitrine(pipeline_env, "explain", "999999", "--png", "/tmp/never.png")
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "999999" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""
