"""Model versions: a second model is trained, registered, backfilled beside the first and
switched to atomically; results of both stay, each tagged with its model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tests.integration.conftest import vitrine
from vitrine.settings import SAMPLE_FASHION_DIR

pytestmark = pytest.mark.integration


def _ok(proc) -> str:  # type: ignore[no-untyped-def]
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_two_models_coexist_and_switch(
    pipeline_env, celery_worker_process, clean_db: Engine, catalog, tmp_path: Path
) -> None:
    directory, _ = catalog
    model_dir = tmp_path / "tiny"
    trained = _ok(
        vitrine(
            pipeline_env,
            "train",
            "--fashion",
            str(SAMPLE_FASHION_DIR),
            "--out",
            str(model_dir),
            "--epochs",
            "1",
            "--limit",
            "1500",
            "--widths",
            "8,16,16",
            "--embedding-dim",
            "32",
            "--name",
            "tiny",
            "--version",
            "2",
            "--json",
        )
    )
    spec = json.loads((model_dir / "model.json").read_text())
    assert spec["embedding_dim"] == 32 and spec["data_fingerprint"].startswith("sha256:")
    # --json: stdout is one JSON object (Keras's own progress lines once leaked into it)
    assert json.loads(trained)["model"] == "tiny@2"

    submitted = json.loads(
        _ok(
            vitrine(
                pipeline_env, "submit", str(directory), "--merchant", "m-models", "--wait", "--json"
            )
        )
    )["results"]
    _ok(vitrine(pipeline_env, "models", "add", str(model_dir)))
    listed = json.loads(_ok(vitrine(pipeline_env, "models", "list", "--json")))["models"]
    # (the session's database may hold other tests' models: only these two are this test's)
    ours = {m["key"]: m["active"] for m in listed if m["key"] in ("fashion-cnn@1", "tiny@2")}
    assert ours == {"fashion-cnn@1": True, "tiny@2": False}
    assert [m["key"] for m in listed if m["active"]] == ["fashion-cnn@1"]

    # another run under the shipped model's key (what `train` without --version names it)
    # is refused, and the shipped model keeps its path
    clash = tmp_path / "clash"
    shutil.copytree(model_dir, clash)
    clash_spec = json.loads((clash / "model.json").read_text())
    (clash / "model.json").write_text(
        json.dumps({**clash_spec, "name": "fashion-cnn", "version": "1"})
    )
    refused = vitrine(pipeline_env, "models", "add", str(clash))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "'fashion-cnn@1' is already registered from" in refused.stderr
    again = json.loads(_ok(vitrine(pipeline_env, "models", "list", "--json")))["models"]
    assert [m["path"] for m in again] == [m["path"] for m in listed]

    try:
        # A bulk backfill (any size here) into the inactive model: its HNSW index is dropped
        # and built after the load, CONCURRENTLY, and is valid when the command returns.
        bulk = dict(pipeline_env, VITRINE_BACKFILL_INDEX_AFTER_ROWS="1")
        result = json.loads(
            _ok(vitrine(bulk, "backfill", "--model", "tiny@2", "--workers", "0", "--json"))
        )
        assert result["images"] == len(submitted) and result["done"] == len(submitted)
        assert result["index_rebuilt"] is True
        with clean_db.connect() as conn:
            valid = conn.execute(
                text(
                    "SELECT i.indisvalid FROM pg_index i JOIN models m "
                    "ON i.indexrelid = to_regclass('embeddings_hnsw_m' || m.id) "
                    "WHERE m.key = 'tiny@2'"
                )
            ).scalar_one()
        assert valid is True
        # Resumable: a second run finds nothing left to do.
        again = json.loads(
            _ok(vitrine(pipeline_env, "backfill", "--model", "tiny@2", "--workers", "0", "--json"))
        )
        assert again["images"] == 0

        with clean_db.connect() as conn:
            dims = dict(
                conn.execute(
                    text(
                        "SELECT m.key, min(vector_dims(e.embedding)) FROM embeddings e "
                        "JOIN models m ON m.id = e.model_id GROUP BY m.key"
                    )
                ).all()
            )
            per_image = (
                conn.execute(text("SELECT count(*) FROM predictions GROUP BY image_id"))
                .scalars()
                .all()
            )
        assert dims == {"fashion-cnn@1": 128, "tiny@2": 32}
        assert set(per_image) == {2}  # one prediction per image per model

        _ok(vitrine(pipeline_env, "models", "activate", "tiny@2"))
        with clean_db.connect() as conn:
            active = conn.execute(text("SELECT key FROM active_model")).scalar_one()
            first = submitted[0]["image_id"]
            neighbours = conn.execute(
                text("SELECT count(*) FROM similar_images(:id, 5)"), {"id": first}
            ).scalar_one()
        assert active == "tiny@2" and neighbours == 5  # similarity now on 32-d vectors
    finally:
        _ok(vitrine(pipeline_env, "models", "activate", "fashion-cnn@1"))
    unknown = vitrine(pipeline_env, "models", "activate", "nope@9")
    assert unknown.returncode == 2 and "registered" in unknown.stderr
    assert "Traceback" not in unknown.stderr
