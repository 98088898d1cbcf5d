"""Real services for integration tests: PostgreSQL+pgvector, Redis and a Celery worker.

Embedded servers are started in a private data directory (or the ones named by
DATABASE_URL / REDIS_URL are used), the schema is migrated, and one real
`celery worker` process serves the whole session.
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import Engine, text

from vitrine.pipeline.training.datasets import load_fashion_mnist
from vitrine.settings import SAMPLE_FASHION_DIR, get_settings

#: The one loopback address the session's workers may fetch from: test HTTP servers that
#: should be reachable listen there; 127.0.0.1 stays refused, as any internal service.
ALLOWED_HTTP_HOST = "127.0.0.2"
#: Size of the small-photo catalog the fault and load runs use.
N_SMALL = 2000


@pytest.fixture(scope="session")
def pipeline_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment for this process and every `vitrine` subprocess of the session.

    Workers read local files under the session's temporary directory (where the tests
    write their photos) and the upload directory, and may fetch from ALLOWED_HTTP_HOST.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="vitrine-it-"))
    data_dir.chmod(0o755)  # the embedded PostgreSQL runs as an unprivileged user under root
    saved = dict(os.environ)
    os.environ["VITRINE_DATA_DIR"] = str(data_dir)
    roots = (tmp_path_factory.getbasetemp(), data_dir / "uploads")
    os.environ["VITRINE_FILE_ROOTS"] = ",".join(str(r) for r in roots)
    os.environ["VITRINE_FETCH_ALLOW_NETWORKS"] = f"{ALLOWED_HTTP_HOST}/32"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    get_settings.cache_clear()
    from vitrine.ops.context import open_context

    urls = open_context().urls()  # starts the embedded servers, migrates their database
    os.environ["DATABASE_URL"] = urls.database_url
    os.environ["REDIS_URL"] = urls.redis_url
    get_settings.cache_clear()
    try:
        yield dict(os.environ)
    finally:
        from vitrine.embedded.services import stop_services

        # Celery results left over from the tests unsubscribe from Redis when collected:
        # let that happen now, while Redis is up, not at a later collection that fails
        # and makes pytest format a traceback in the middle of another parse.
        gc.collect()
        embedded = get_settings().model_copy(
            update={"database_url": saved.get("DATABASE_URL"), "redis_url": saved.get("REDIS_URL")}
        )
        stop_services(embedded)
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ctx(pipeline_env: dict[str, str]):  # type: ignore[no-untyped-def]
    from vitrine.ops.context import open_context

    ctx = open_context()
    ctx.broker_url()  # Celery in this process publishes to the session's broker
    return ctx


@pytest.fixture(scope="session")
def engine(ctx) -> Engine:  # type: ignore[no-untyped-def]
    return ctx.engine()


@pytest.fixture(scope="session")
def celery_worker_process(ctx) -> Iterator[subprocess.Popen[bytes]]:  # type: ignore[no-untyped-def]
    """One real `celery worker` (prefork, 2 processes) for the session."""
    from vitrine.embedded.launcher import running_worker

    log = ctx.settings.data_dir / "logs" / "test-worker.log"
    with running_worker(ctx.urls(), concurrency=2, log_path=log) as proc:
        yield proc
    assert proc.returncode is not None


@pytest.fixture
def clean_db(engine: Engine) -> Engine:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE images RESTART IDENTITY CASCADE"))
    return engine


@pytest.fixture(scope="session")
def fashion_slice():  # type: ignore[no-untyped-def]
    return load_fashion_mnist(SAMPLE_FASHION_DIR)


@pytest.fixture(scope="session")
def catalog(fashion_slice, tmp_path_factory) -> tuple[Path, dict[str, str]]:  # type: ignore[no-untyped-def]
    """80 merchant-style photos (JPEG/PNG/WebP, some EXIF-rotated) and their true labels."""
    import csv

    from vitrine.pipeline.synthetic.photos import write_catalog

    out = tmp_path_factory.mktemp("catalog")
    manifest = write_catalog(fashion_slice.x_test, fashion_slice.y_test, out, n=80, seed=11)
    with manifest.open(newline="") as fh:
        truth = {row["file"]: row["label"] for row in csv.DictReader(fh)}
    return out, truth


@pytest.fixture(scope="session")
def small_catalog(tmp_path_factory: pytest.TempPathFactory, fashion_slice) -> list[Path]:  # type: ignore[no-untyped-def]
    """2,000 small product photos (JPEG and PNG, 96-160 px): the faults are about
    delivery, so decoding should not dominate the run."""
    out = tmp_path_factory.mktemp("fault-catalog")
    rng = np.random.default_rng(5)
    paths = []
    for i in range(N_SMALL):
        item = fashion_slice.x_test[i % len(fashion_slice.x_test)]
        side = int(rng.integers(96, 161))
        img = Image.fromarray(255 - item).resize((side, side)).convert("RGB")
        path = out / f"{i:05d}.{'jpg' if i % 2 else 'png'}"
        img.save(path)
        paths.append(path)
    return paths


def vitrine(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "vitrine", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def unit_norms(vectors: list[np.ndarray]) -> np.ndarray:
    return np.array([float(np.linalg.norm(v)) for v in vectors])
