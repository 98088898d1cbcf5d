"""`vitrine bench search` and `bench duplicates` against the real database: they answer
with the fields the docs quote, the figures are plausible, and nothing is left behind."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine, text

from tests.integration.conftest import vitrine

pytestmark = pytest.mark.integration


def test_bench_search_scores_every_plan_and_drops_its_database(
    pipeline_env: dict[str, str], engine: Engine
) -> None:
    proc = vitrine(
        pipeline_env,
        "bench",
        "search",
        "--vectors",
        "3000",
        "--queries",
        "40",
        "--merchants",
        "10",
        "--ef-search",
        "20",
        "--json",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["vectors"] == 3000 and got["dim"] == 128 and got["queries"] == 40
    assert "Fashion-MNIST" in got["source"]
    assert got["index"]["m"] == 16 and got["index"]["size_mb"] > 0 and got["build_s"] > 0
    # A merchant of ~300 rows is searched exactly: every answer complete and right.
    assert got["filtered_recall_at_10"] == 1.0 and got["filtered_short_results"] == 0
    assert got["recall_at_10"] >= 0.95 and got["short_results"] == 0
    assert got["label_filtered_short_results"] == 0
    assert 0 < got["p50_ms"] <= got["p95_ms"]
    (sweep,) = got["ef_search_sweep"]
    assert sweep["ef_search"] == 20 and 0 < sweep["recall_at_10"] <= 1.0
    assert got["scratch_database"] is None
    with engine.connect() as conn:
        names = conn.execute(text("SELECT datname FROM pg_database")).scalars().all()
    assert not [n for n in names if n.endswith("_bench_search")]


def test_bench_duplicates_reports_precision_and_recall(pipeline_env: dict[str, str]) -> None:
    # 100 items, not fewer: with 30, one pair of look-alike ankle boots in Debian's
    # Fashion-MNIST (test images 5151 and 8294, 28-30 bits apart) is 5 of ~90 candidate
    # pairs, and precision then measures that draw rather than the hash.
    proc = vitrine(pipeline_env, "bench", "duplicates", "--items", "100", "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["items"] == 100 and 200 <= got["photos"] <= 400 and got["hash_bits"] == 320
    assert got["precision"] >= 0.95 and got["recall"] >= 0.6
    assert set(got["recall_by_edit"]) == {
        "crop",
        "brightness",
        "watermark",
        "pad",
        "resize",
        "jpeg",
    }
    assert got["hash_ms_per_photo"] > 0
