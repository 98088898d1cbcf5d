"""vitrine_producer from an environment with neither TensorFlow nor Celery, end to end.

A fresh virtual environment (no pip, no system site-packages) sees only the producer's
source and redis-py, linked from this checkout and this venv: nothing is downloaded. What
it publishes to the session's embedded Redis must become `done` rows through the real
worker, exactly as uploads from vitrine's own Celery client do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from celery.result import AsyncResult
from sqlalchemy import Engine, text

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PRODUCER_SRC = REPO / "producer" / "src"
SYSTEM_PYTHON = Path("/usr/bin/python3")


def _version(python: Path) -> tuple[int, ...]:
    out = subprocess.run(
        [str(python), "-I", "-c", "import sys; print(list(sys.version_info[:3]))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return tuple(json.loads(out))


def _base_python() -> Path:
    """The system python when it is this venv's Python version, else the interpreter this
    venv was made from: redis-py is linked in from this venv, and its dependencies depend
    on the exact version (before 3.11.3 it also needs async-timeout, not installed here)."""
    if SYSTEM_PYTHON.exists() and _version(SYSTEM_PYTHON) == tuple(sys.version_info[:3]):
        return SYSTEM_PYTHON
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    assert base.exists(), f"no base interpreter for a fresh venv at {base}"
    return base


@pytest.fixture(scope="module")
def thin_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python` of a new venv where vitrine_producer and redis import, and nothing else."""
    base = _base_python()
    probe = subprocess.run(
        [
            str(base),
            "-I",
            "-c",
            "import importlib.util as u; "
            "print([m for m in ('tensorflow', 'celery') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert probe.stdout.strip() == "[]", f"{base} has {probe.stdout.strip()} installed"

    root = tmp_path_factory.mktemp("thin-producer")
    venv = root / "venv"
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    libs = root / "libs"
    libs.mkdir()
    (libs / "redis").symlink_to(Path(redis.__file__).resolve().parent, target_is_directory=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    (Path(site) / "vitrine_producer_dev.pth").write_text(f"{PRODUCER_SRC}\n{libs}\n")
    return python


def _run_thin(
    python: Path, cwd: Path, *args: str, redis_url: str | None
) -> subprocess.CompletedProcess[str]:
    """Run in the thin venv, from outside the repository (so `worker` is not importable)
    and without this process's PYTHONPATH."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return subprocess.run(
        [str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_thin_venv_has_no_tensorflow_celery_or_vitrine(thin_python: Path, tmp_path: Path) -> None:
    script = (
        "import importlib, json, vitrine_producer, redis\n"
        "missing = []\n"
        "for name in ('tensorflow', 'celery', 'kombu', 'worker', 'pipeline'):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError:\n"
        "        missing.append(name)\n"
        "print(json.dumps({'missing': missing, 'producer': vitrine_producer.__file__}))\n"
    )
    proc = _run_thin(thin_python, tmp_path, "-c", script, redis_url=None)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["missing"] == ["tensorflow", "celery", "kombu", "worker", "pipeline"]
    assert Path(report["producer"]).is_relative_to(PRODUCER_SRC)


def test_without_redis_url_the_thin_producer_says_so_in_one_line(
    thin_python: Path, tmp_path: Path
) -> None:
    proc = _run_thin(
        thin_python,
        tmp_path,
        "-c",
        "import vitrine_producer as p\n"
        "try:\n"
        "    p.submit_upload('https://cdn.example.com/p/1.jpg', merchant_id='m')\n"
        "except p.ProducerConfigError as exc:\n"
        "    print(exc)\n",
        redis_url=None,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "no broker: set REDIS_URL (e.g. redis://redis:6379/0)\n"

    cli = _run_thin(
        thin_python,
        tmp_path,
        "-m",
        "vitrine_producer",
        "https://cdn.example.com/p/1.jpg",
        "--merchant",
        "m",
        redis_url=None,
    )
    assert cli.returncode == 2 and cli.stdout == ""
    assert cli.stderr == (
        "python -m vitrine_producer: no broker: set REDIS_URL (e.g. redis://redis:6379/0)\n"
    )
    assert "Traceback" not in cli.stderr


def test_thin_producer_uploads_become_done_rows(
    pipeline_env: dict[str, str],
    celery_worker_process: subprocess.Popen[bytes],
    clean_db: Engine,
    catalog: tuple[Path, dict[str, str]],
    thin_python: Path,
    tmp_path: Path,
) -> None:
    """submit_upload, Producer.submit_many and the CLI, each from the thin venv."""
    directory, _ = catalog
    photos = sorted(directory.glob("*.*"))[2:6]
    script = (
        "import json, sys, vitrine_producer as p\n"
        "uris = sys.argv[1:]\n"
        "ids = [p.submit_upload(uris[0], merchant_id='m-thin', sku='THIN-0')]\n"
        "with p.Producer() as producer:\n"
        "    ids += producer.submit_many(\n"
        "        [{'uri': u, 'merchant_id': 'm-thin', 'sku': f'THIN-{i}'}\n"
        "         for i, u in enumerate(uris[1:3], start=1)])\n"
        "print(json.dumps(ids))\n"
    )
    uris = [p.as_uri() for p in photos]
    redis_url = pipeline_env["REDIS_URL"]
    proc = _run_thin(thin_python, tmp_path, "-c", script, *uris[:3], redis_url=redis_url)
    assert proc.returncode == 0, proc.stderr
    task_ids = json.loads(proc.stdout)
    cli = _run_thin(
        thin_python,
        tmp_path,
        "-m",
        "vitrine_producer",
        uris[3],
        "--merchant",
        "m-thin",
        "--sku",
        "THIN-3",
        redis_url=redis_url,
    )
    assert cli.returncode == 0, cli.stderr
    task_ids.append(cli.stdout.strip())
    assert len(set(task_ids)) == 4

    from vitrine.worker.celery_app import app

    for task_id in task_ids:  # the worker stores each event's outcome under its task id
        outcome = AsyncResult(task_id, app=app).get(timeout=120)
        assert len(outcome["done"]) == 1, outcome
    with clean_db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT i.uri, i.sku, i.status, p.label FROM images i "
                "JOIN predictions p ON p.image_id = i.id WHERE i.merchant_id = 'm-thin'"
            )
        ).all()
    assert {r.uri: (r.sku, r.status) for r in rows} == {
        uri: (f"THIN-{i}", "done") for i, uri in enumerate(uris)
    }, rows
    assert all(r.label for r in rows)
