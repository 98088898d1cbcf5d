"""The `vitrine` command as users meet it, against the session's real servers and worker:
read-only roles, exit codes, plain output, sources, psql URLs, quiet exits."""

from __future__ import annotations

import csv
import functools
import http.server
import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from tests.integration.conftest import ALLOWED_HTTP_HOST, vitrine

pytestmark = pytest.mark.integration

RO_ROLE = "vitrine_readonly_test"


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    return proc.stdout


@pytest.fixture
def done_images(pipeline_env, celery_worker_process, clean_db: Engine, catalog) -> list[dict]:  # type: ignore[no-untyped-def]
    directory, _ = catalog
    out = _ok(
        vitrine(pipeline_env, "submit", str(directory), "--merchant", "m-cli", "--wait", "--json")
    )
    images = json.loads(out)["results"]
    assert {i["status"] for i in images} == {"done"}
    return images


@pytest.fixture
def read_only_env(pipeline_env, clean_db: Engine) -> Iterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    """A login that may only SELECT, as an analyst's would be."""
    with clean_db.begin() as conn:
        conn.execute(text(f"CREATE ROLE {RO_ROLE} LOGIN PASSWORD 'ro-secret'"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {RO_ROLE}"))
        conn.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {RO_ROLE}"))
        # Row-level security (docs/roles.md) shows rows only to roles with a policy.
        conn.execute(text(f"GRANT vitrine_analyst TO {RO_ROLE}"))
    url = make_url(pipeline_env["DATABASE_URL"]).set(username=RO_ROLE, password="ro-secret")
    yield {**pipeline_env, "DATABASE_URL": url.render_as_string(hide_password=False)}
    with clean_db.begin() as conn:
        conn.execute(text(f"DROP OWNED BY {RO_ROLE}"))
        conn.execute(text(f"DROP ROLE {RO_ROLE}"))


def test_read_only_commands_work_with_a_select_only_role(
    read_only_env: dict[str, str], done_images: list[dict], clean_db: Engine, tmp_path: Path
) -> None:
    with clean_db.connect() as conn:
        registry = conn.execute(text("SELECT key, path, is_active FROM models ORDER BY id")).all()
    # Another model directory in the environment must not re-register anything.
    other_model = shutil.copytree(
        Path(__file__).resolve().parents[2] / "models" / "fashion-cnn", tmp_path / "elsewhere"
    )
    env = {**read_only_env, "VITRINE_MODEL_DIR": str(other_model)}

    status = json.loads(_ok(vitrine(env, "status", "--json")))
    assert status["images"]["done"] == len(done_images)
    assert "ro-secret" not in json.dumps(status)  # passwords never printed
    first = done_images[0]["image_id"]
    found = json.loads(_ok(vitrine(env, "similar", str(first), "-k", "3", "--json")))
    # At most k, none past the distance cut-off (0.3 by default), never the image itself.
    assert 1 <= len(found["neighbours"]) <= 3
    assert all(n["distance"] <= 0.3 for n in found["neighbours"])
    assert first not in [n["image_id"] for n in found["neighbours"]]
    listed = json.loads(_ok(vitrine(env, "models", "list", "--json")))["models"]
    assert [m["key"] for m in listed] == [r.key for r in registry]
    sheet = tmp_path / "sheet.png"
    shown = _ok(vitrine(env, "similar", str(first), "--png", str(sheet)))
    assert f"contact sheet: {sheet}" in " ".join(shown.split()) and sheet.stat().st_size > 1000

    with clean_db.connect() as conn:
        after = conn.execute(text("SELECT key, path, is_active FROM models ORDER BY id")).all()
    assert after == registry  # nothing was registered, re-pathed or activated

    # A command that writes says so in one line (exit 2), it does not crash.
    refused = vitrine(env, "submit", str(tmp_path / "sheet.png"), "--merchant", "m-ro")
    assert refused.returncode == 2, refused.stderr
    assert "permission denied" in refused.stderr and "Traceback" not in refused.stderr


def test_tables_not_reprs(pipeline_env, done_images: list[dict]) -> None:  # type: ignore[no-untyped-def]
    status = _ok(vitrine(pipeline_env, "status"))
    assert "images by status" in status and "fashion-cnn@1" in status
    requeue = _ok(vitrine(pipeline_env, "requeue", "--workers", "0"))
    backfill = _ok(vitrine(pipeline_env, "backfill", "--workers", "0"))
    for out in (status, requeue, backfill):
        assert "{'" not in out and "':" not in out, out  # no Python dict reprs


def test_hashes_are_measured_again_from_the_photos(
    pipeline_env, engine: Engine, done_images
) -> None:  # type: ignore[no-untyped-def]
    """After a migration clears hashes (the recipe changed), `db upgrade` says how many and
    `backfill --hashes` measures them again from the stored photos, as the worker did."""
    ids = [i["image_id"] for i in done_images]
    with engine.begin() as conn:
        before = dict(
            conn.execute(
                text("SELECT id, phash::text FROM images WHERE id = ANY(:i)"), {"i": ids}
            ).all()
        )
        conn.execute(text("UPDATE images SET phash = NULL WHERE id = ANY(:i)"), {"i": ids})
    told = json.loads(_ok(vitrine(pipeline_env, "db", "upgrade", "--json")))
    assert told["hashes_to_measure"] == len(ids)
    report = json.loads(
        _ok(vitrine(pipeline_env, "backfill", "--hashes", "--workers", "0", "--json"))
    )
    assert report["images"] == report["done"] == len(ids) and report["failed"] == 0
    with engine.connect() as conn:
        after = dict(
            conn.execute(
                text("SELECT id, phash::text FROM images WHERE id = ANY(:i)"), {"i": ids}
            ).all()
        )
    assert after == before  # the same photos, the same hashes
    assert (
        json.loads(_ok(vitrine(pipeline_env, "db", "upgrade", "--json")))["hashes_to_measure"] == 0
    )


def test_failed_uploads_exit_1_and_say_why(
    pipeline_env, celery_worker_process, clean_db, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "notes.jpg").write_text("not an image")
    proc = vitrine(
        pipeline_env, "submit", str(tmp_path / "notes.jpg"), "--merchant", "m-x", "--wait", "--json"
    )
    assert proc.returncode == 1, proc.stderr
    (row,) = json.loads(proc.stdout)["results"]
    assert row["status"] == "failed" and "not an image" in row["error"]


def test_submit_reads_a_folders_manifest_and_http_urls(
    pipeline_env, celery_worker_process, clean_db: Engine, catalog
) -> None:  # type: ignore[no-untyped-def]
    directory, truth = catalog
    queued = json.loads(
        _ok(vitrine(pipeline_env, "submit", str(directory), "--merchant", "m-q", "--json"))
    )  # without --wait: exits at once, quietly (no AsyncResult noise at interpreter exit)
    assert queued["uploads"] == queued["created"] == len(truth) == len(set(queued["image_ids"]))
    with (directory / "manifest.csv").open(newline="") as fh:
        skus = {row["file"]: row["sku"] for row in csv.DictReader(fh)}
    _ok(vitrine(pipeline_env, "submit", str(directory), "--merchant", "m-sku", "--wait", "--json"))
    with clean_db.connect() as conn:
        stored = dict(
            conn.execute(text("SELECT uri, sku FROM images WHERE merchant_id = 'm-sku'")).all()
        )
    assert {Path(u).name: s for u, s in stored.items()} == skus

    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(
        (ALLOWED_HTTP_HOST, 0), functools.partial(Handler, directory=str(directory))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        name = sorted(truth)[0]
        url = f"http://{ALLOWED_HTTP_HOST}:{server.server_address[1]}/{name}"
        out = _ok(
            vitrine(
                pipeline_env,
                "submit",
                url,
                "--merchant",
                "m-http",
                "--sku",
                "H1",
                "--wait",
                "--json",
            )
        )
    finally:
        server.shutdown()
    (row,) = json.loads(out)["results"]
    assert row["status"] == "done" and row["uri"] == url and row["label"] == truth[name]
    assert requests == [f"/{name}"]


def test_services_status_gives_a_url_psql_accepts(pipeline_env) -> None:  # type: ignore[no-untyped-def]
    status = json.loads(_ok(vitrine(pipeline_env, "services", "status", "--json")))
    psql_url = status["postgres"]["psql_url"]
    assert psql_url.startswith("postgresql://")
    psql = shutil.which("psql")
    if psql:  # the real client where the machine has one
        out = subprocess.run(
            [psql, psql_url, "-tAc", "SELECT 41 + 1"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert out.returncode == 0 and out.stdout.strip() == "42", out.stderr
    else:
        import psycopg

        with psycopg.connect(psql_url) as conn:
            assert conn.execute("SELECT 41 + 1").fetchone() == (42,)


def test_an_unreachable_broker_is_exit_3(pipeline_env, tmp_path: Path, catalog) -> None:  # type: ignore[no-untyped-def]
    directory, truth = catalog
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        env = {**pipeline_env, "REDIS_URL": f"redis://:pw@127.0.0.1:{port}/0"}
        proc = vitrine(env, "submit", str(directory / sorted(truth)[0]), "--merchant", "m-3")
    assert proc.returncode == 3, proc.stderr
    assert f"127.0.0.1:{port}" in proc.stderr and "REDIS_URL" in proc.stderr
    assert "Traceback" not in proc.stderr and ":pw@" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_demo_scores_only_its_own_items(
    pipeline_env, celery_worker_process, engine: Engine, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    first = json.loads(
        _ok(
            vitrine(
                pipeline_env, "demo", "--n", "40", "--out", str(tmp_path), "--json", timeout=400
            )
        )
    )
    # 40 distinct items, a third of them transparent cut-outs: no near-duplicate pair
    with engine.connect() as conn:
        pairs = conn.execute(
            text(
                "SELECT count(*) FROM duplicate_candidates WHERE merchant_id = 'demo-shop' "
                "AND duplicate_merchant_id = 'demo-shop'"
            )
        ).scalar_one()
        formats = dict(
            conn.execute(
                text(
                    "SELECT format, count(*) FROM images WHERE merchant_id = 'demo-shop' GROUP BY 1"
                )
            ).all()
        )
    assert pairs == 0 and formats.get("PNG", 0) >= 5, formats
    assert first["images"] == 40 and first["failed"] == 0
    # The same photos uploaded again by the catalog's own shops: exact duplicates that
    # would be every demo item's nearest neighbours if the search left the demo's shop.
    _ok(vitrine(pipeline_env, "ingest", str(tmp_path / "catalog"), "--workers", "0", "--json"))
    again = json.loads(
        _ok(
            vitrine(
                pipeline_env, "demo", "--n", "40", "--out", str(tmp_path), "--json", timeout=400
            )
        )
    )
    assert again["images"] == 40 and again["skipped"] == 40  # already done: nothing redone
    assert again["accuracy_vs_truth"] == first["accuracy_vs_truth"] >= 0.8
    found = [n for hood in again["neighbours"] for n in hood["found"]]
    assert len(found) == 15
    assert {n["merchant_id"] for n in found} == {"demo-shop"}
    assert "?" not in {n["true_label"] for n in found}
    assert (tmp_path / "neighbours.png").stat().st_size > 10_000


def test_a_configured_database_changes_only_in_db_upgrade(pipeline_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Commands refuse a database at an older schema instead of migrating it; `db
    upgrade` migrates it and registers the configured model, once."""
    from tests.integration._pg import create_database, drop_database

    url = create_database(pipeline_env["DATABASE_URL"])
    name = make_url(url).database
    env = {**pipeline_env, "DATABASE_URL": url}
    try:
        refused = vitrine(env, "status")
        assert refused.returncode == 2, refused.stderr
        assert "schema revision none" in refused.stderr and "vitrine db upgrade" in refused.stderr

        first = json.loads(_ok(vitrine(env, "db", "upgrade", "--json")))
        assert first["registered_model"] == "fashion-cnn@1"
        other = shutil.copytree(
            Path(__file__).resolve().parents[2] / "models" / "fashion-cnn", tmp_path / "other"
        )
        again = json.loads(
            _ok(vitrine({**env, "VITRINE_MODEL_DIR": str(other)}, "db", "upgrade", "--json"))
        )
        assert again == {
            "revision": first["revision"],
            "registered_model": None,
            "hashes_to_measure": 0,
        }
        listed = json.loads(_ok(vitrine(env, "models", "list", "--json")))["models"]
        assert [(m["key"], m["active"]) for m in listed] == [("fashion-cnn@1", True)]
        assert Path(listed[0]["path"]).name == "fashion-cnn"  # not re-pointed at the copy
    finally:
        drop_database(pipeline_env["DATABASE_URL"], str(name))


def test_credentials_never_appear_in_output_or_logs(pipeline_env, done_images) -> None:  # type: ignore[no-untyped-def]
    """The servers' passwords are in the URLs the processes use, and nowhere people read."""
    secrets = {
        make_url(pipeline_env["DATABASE_URL"]).password,
        make_url(pipeline_env["REDIS_URL"].replace("redis://", "postgresql://", 1)).password,
    }
    assert all(secrets) and all(len(s) >= 16 for s in secrets)  # the servers do have them
    shown = [
        _ok(vitrine(pipeline_env, "status")),
        _ok(vitrine(pipeline_env, "status", "--json")),
        _ok(vitrine(pipeline_env, "services", "status")),
        _ok(vitrine(pipeline_env, "services", "status", "--json")),
        _ok(vitrine(pipeline_env, "models", "list", "--json")),
    ]
    logs = Path(pipeline_env["VITRINE_DATA_DIR"]) / "logs"
    written = [p.read_text(errors="replace") for p in logs.glob("*.log")]
    assert written, "the session's workers wrote their logs here"
    for text_ in shown + written:
        for secret in secrets:
            assert secret not in text_


def test_bench_ingest_smoke(pipeline_env) -> None:  # type: ignore[no-untyped-def]
    """The benchmark's shape and that every image of every path landed (no speed asserted)."""
    out = _ok(
        vitrine(
            pipeline_env,
            "bench",
            "ingest",
            "--images",
            "16",
            "--naive-images",
            "4",
            "--latency-uploads",
            "6",
            "--latency-rate",
            "20",
            "--json",
            timeout=600,
        )
    )
    result = json.loads(out)
    for key in (
        "bound_images_per_s",
        "bulk_images_per_s",
        "live_images_per_s",
        "naive_images_per_s",
        "p50_latency_ms",
        "p95_latency_ms",
        "worker_peak_rss_mb",
        "db_images_per_s",
        "p95_latency_during_backfill_ms",
    ):
        assert isinstance(result[key], int | float) and result[key] > 0, key
    assert result["images"] == 16 and result["cpus"] >= 1
    landed = result["landed"]
    assert set(landed) == {
        "warm-up",
        "bulk",
        "live",
        "latency",
        "latency-during-backfill",
        "naive-warm-up",
        "naive",
    }
    assert all(n == total for n, total in (v.split("/") for v in landed.values())), landed
    assert landed["bulk"] == landed["live"] == "16/16" and landed["naive"] == "4/4"
    assert set(result["ratios"]) == {"live_vs_bound", "bulk_vs_bound", "live_vs_naive"}
    # the per-stage CPU budget: every stage of every format measured, and what they add
    # up to no more than the photo's whole cost
    stages = result["stages"]
    table = stages["ms_per_photo"]
    assert set(table) == {*stages["photos"], "all"} and sum(stages["photos"].values()) == 16
    for fmt, row in table.items():
        assert row["decode"] > 0 and row["total"] > 0, fmt
        parts = sum(v for k, v in row.items() if k != "total")
        assert parts <= row["total"] * 1.01 + 0.05, (fmt, row)
    forward = stages["forward_cpu_ms_per_photo"]
    # the shipped model has an unknown detector: its views are scored in the bound's pool
    assert forward["model"] > 0 and forward["unknown detector"] > 0
    writes = stages["write_cpu_ms_per_photo"]
    assert "worker main" in writes  # and the database's share where it is embedded, measured
    assert ("database" in writes) == ("postgres" in result["cpu_s"]["bulk"])
