"""`vitrine train --corrections` on photos the real worker ingested and SQL-inserted decisions.

The worker labels a small catalog with the shipped model; the test then records review
decisions as the desk would (approvals of the stored label, relabels to another class,
one image decided twice), and runs the real CLI. The "before" figures must be exactly
what the stored predictions imply (so the trainer reads the photos as the worker did),
the new model directory must load under a new version, and the active model must stay.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tests.integration.conftest import vitrine
from vitrine.db import repository
from vitrine.pipeline.inference.model import load_model_dir
from vitrine.pipeline.types import FASHION_MNIST_LABELS
from vitrine.settings import SAMPLE_FASHION_DIR

pytestmark = pytest.mark.integration

N_PHOTOS = 16


@pytest.fixture(scope="module")
def corrected_catalog(fashion_slice, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    from vitrine.pipeline.synthetic.photos import write_catalog

    out = tmp_path_factory.mktemp("corrections-catalog")
    write_catalog(fashion_slice.x_test, fashion_slice.y_test, out, n=N_PHOTOS, seed=23)
    return out


def _ingest(env: dict[str, str], directory: Path) -> None:
    proc = vitrine(env, "submit", str(directory), "--merchant", "m-corrections", "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    assert {r["status"] for r in json.loads(proc.stdout)["results"]} == {"done"}


def _stored(engine: Engine) -> list[tuple[int, str, int]]:
    """(image id, stored label, model id) of every image, in id order."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT p.image_id, p.label, p.model_id FROM predictions p ORDER BY p.image_id")
        ).all()
    return [(int(r.image_id), str(r.label), int(r.model_id)) for r in rows]


def _decide(engine: Engine, decisions: list[tuple[int, str, str, str, int, str]]) -> None:
    """(image, action, label, previous, model, decided_at offset) rows, as the desk writes."""
    with engine.begin() as conn:
        for image_id, action, label, previous, model_id, offset in decisions:
            conn.execute(
                text(
                    "INSERT INTO label_corrections (image_id, model_id, action, label, "
                    "previous_label, queue, decided_by, decided_at) VALUES (:i, :m, :a, :l, "
                    ":p, 'low_confidence', 'desk-test', now() - CAST(:o AS interval))"
                ),
                {"i": image_id, "m": model_id, "a": action, "l": label, "p": previous, "o": offset},
            )


def _other(label: str) -> str:
    """A different class, the same for every item of one class (a house convention)."""
    return FASHION_MNIST_LABELS[(FASHION_MNIST_LABELS.index(label) + 1) % 10]


def _active_key(engine: Engine) -> str | None:
    with engine.connect() as conn:
        active = repository.active_model(conn)
    return None if active is None else active.key


def test_too_few_corrections_are_refused(
    pipeline_env, celery_worker_process, clean_db: Engine, corrected_catalog: Path, tmp_path: Path
) -> None:
    proc = vitrine(pipeline_env, "train", "--corrections", "--out", str(tmp_path / "m"))
    assert proc.returncode == 2, proc.stderr
    assert "0 corrected items" in proc.stderr and "at least" in proc.stderr
    _ingest(pipeline_env, corrected_catalog)
    stored = _stored(clean_db)
    _decide(clean_db, [(i, "approve", label, label, m, "1 hour") for i, label, m in stored[:2]])
    proc = vitrine(pipeline_env, "train", "--corrections", "--out", str(tmp_path / "m"))
    assert proc.returncode == 2 and "2 corrected items" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "m").exists()


def test_train_on_corrections_writes_a_new_model_and_reports_before_after(
    pipeline_env, celery_worker_process, clean_db: Engine, corrected_catalog: Path, tmp_path: Path
) -> None:
    _ingest(pipeline_env, corrected_catalog)
    stored = _stored(clean_db)
    assert len(stored) == N_PHOTOS
    active_before = _active_key(clean_db)
    approve, relabel = stored[:6], stored[6:12]
    (twice_id, twice_label, twice_model) = stored[12]
    _decide(
        clean_db,
        [(i, "approve", label, label, m, "2 hours") for i, label, m in approve]
        + [(i, "relabel", _other(label), label, m, "2 hours") for i, label, m in relabel]
        # decided twice: relabelled first, approved later; the approval counts
        + [
            (twice_id, "relabel", _other(twice_label), twice_label, twice_model, "3 hours"),
            (twice_id, "approve", twice_label, twice_label, twice_model, "1 hour"),
        ],
    )
    with clean_db.connect() as conn:
        latest = {c.image_id: c for c in repository.latest_corrections(conn)}
    assert len(latest) == 13 and latest[twice_id].action == "approve"

    out = tmp_path / "corrected"
    proc = vitrine(
        pipeline_env,
        "train",
        "--corrections",
        "--out",
        str(out),
        "--epochs",
        "1",
        "--json",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["base"] == active_before
    assert report["corrections"] == 13 and report["relabelled"] == 6
    assert report["skipped"] == [] and report["replay"] >= 1000
    compare = report["compare"]
    # Before: exactly what the worker stored: approvals agree with it, relabels do not.
    assert compare["corrected"]["before"] == round(7 / 13, 4)
    assert compare["relabelled"]["before"] == 0.0
    # 2,000 test images, or all of them where only the repo's slice is there (a fresh
    # machine without Debian's data set)
    from vitrine.ops.corrections import TEST_SAMPLE
    from vitrine.ops.data import fashion_mnist
    from vitrine.pipeline.training.datasets import DEBIAN_DIR

    test_images = len(fashion_mnist(None, sample=not DEBIAN_DIR.is_dir()).x_test)
    assert compare["test"]["n"] == min(TEST_SAMPLE, test_images)
    assert compare["test"]["before"] >= 0.85
    for row in compare.values():
        assert 0.0 <= row["after"] <= 1.0
    # Measured 0.5385 -> 0.6154 (relabelled 0 -> 1 of 6) in one epoch: no step backwards.
    assert compare["corrected"]["after"] >= compare["corrected"]["before"]
    # One epoch over a mostly-replay set keeps the rest of what the model knew.
    assert compare["test"]["after"] >= compare["test"]["before"] - 0.05

    loaded = load_model_dir(out)
    assert loaded.spec.key == report["model"] != active_before
    assert loaded.spec.version.startswith("1.c")
    assert loaded.spec.training["recipe"] == "corrections"
    assert loaded.spec.training["base_model"] == active_before
    assert sorted(loaded.spec.training["corrected_image_ids"]) == sorted(latest)
    assert loaded.spec.metrics["test_accuracy"] == compare["test"]["after"]
    assert not (out / "checkpoint").exists()
    # `eval --corrections` scores any model on the same items: the same figures.
    for model_args, when in (([], "before"), (["--model", str(out)], "after")):
        proc = vitrine(
            pipeline_env,
            "eval",
            *model_args,
            "--corrections",
            "--no-retrieval",
            "--data",
            str(SAMPLE_FASHION_DIR),
            "--json",
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr
        scored = json.loads(proc.stdout)["corrections"]
        assert (scored["n"], scored["relabelled"]) == (13, 6)
        assert scored["accuracy"] == compare["corrected"][when]
        assert scored["relabelled_accuracy"] == compare["relabelled"][when]
    # Written, not registered or activated: that stays the operator's decision.
    assert _active_key(clean_db) == active_before
    with clean_db.connect() as conn:
        keys = {m.key for m in repository.list_models(conn)}
    assert report["model"] not in keys
