"""`vitrine bench search`: similarity search at catalog scale, as vitrine runs it.

Loads N vectors shaped like real ones (`vitrine.bench.vectors`) into a scratch database on
the configured server (created from scratch, migrated, dropped afterwards unless
`--keep`), spread over 100 merchants, with the model's HNSW index built the way a
re-embedding backfill builds it: COPY first, then `CREATE INDEX CONCURRENTLY`. Then it
times the SQL functions analysts and the API call (`similar_to_vector`), one query at a
time from a client on the same machine, and scores each answer against an exact search
in numpy: unfiltered, within one merchant (1 % of the rows), and within one class.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import Connection, Engine, make_url, text
from sqlalchemy.exc import DBAPIError

from vitrine.bench.vectors import MODEL_VECTORS, VectorSet, catalog_vectors, describe_extra
from vitrine.db import repository
from vitrine.db.engine import make_engine
from vitrine.db.migrate import upgrade
from vitrine.db.repository import EmbeddingRow
from vitrine.db.schema import hnsw_index_name
from vitrine.ops.context import Context
from vitrine.ops.data import fashion_mnist
from vitrine.ops.errors import UserError
from vitrine.ops.models import check_model_dir
from vitrine.ops.progress import ProgressFactory, no_progress
from vitrine.pipeline.inference.model import load_model_dir
from vitrine.pipeline.training.datasets import DEBIAN_DIR

K = 10
EXACT_QUERIES = 5
#: One query: its vector, the merchant and label it is limited to, the rows that match.
Case = tuple[np.ndarray, str | None, str | None, np.ndarray]


@dataclass(frozen=True)
class SearchBench:
    vectors: int = 20_000
    queries: int = 200
    merchants: int = 100
    seed: int = 2026
    ef_search: tuple[int, ...] = ()  # other candidate-list lengths to measure as well
    keep: bool = False  # keep the scratch database afterwards
    reuse: bool = False  # measure a kept scratch database again, if it holds these vectors


def run_search_bench(
    ctx: Context, req: SearchBench, *, progress: ProgressFactory = no_progress
) -> dict[str, Any]:
    settings = ctx.settings
    check_model_dir(settings.model_dir)
    model = load_model_dir(settings.model_dir)
    data = fashion_mnist(None, sample=not DEBIAN_DIR.is_dir())

    def vectors(n: int) -> VectorSet:
        return catalog_vectors(
            model,
            data,
            n=n,
            queries=req.queries,
            seed=req.seed,
            cache_dir=settings.data_dir / "bench",
            progress=progress,
        )

    url = _scratch_database(ctx.database_url(), reuse=req.reuse)
    results: dict[str, Any] = {"merchants": req.merchants}
    try:
        engine = make_engine(url)
        kept = _read_catalog(engine, model.spec.labels, progress) if req.reuse else None
        if kept is not None and len(kept[0]) == req.vectors:
            # The kept database is the truth the answers are scored against; only the
            # queries (and the description) are made again.
            ids, stored, merchant_of, labels = kept
            made = vectors(min(req.vectors, MODEL_VECTORS))
            source = made.source + describe_extra(req.vectors - len(made.vectors))
            made = dataclasses.replace(made, vectors=stored, labels=labels, source=source)
            results["reused"] = True
        else:
            made = vectors(req.vectors)
            merchant_of = np.random.default_rng(req.seed + 1).integers(
                0, req.merchants, len(made.vectors)
            )
            upgrade(url)
            ids = _load(engine, model.spec, settings.model_dir, made, merchant_of, results)
        results.update(
            vectors=len(made.vectors),
            dim=int(made.vectors.shape[1]),
            queries=len(made.queries),
            source=made.source,
        )
        with engine.connect() as conn:
            results.update(_measure_all(conn, made, ids, merchant_of, model.spec.labels, req))
        engine.dispose()
    finally:
        if not req.keep:
            _drop_database(ctx.database_url(), url)
    results["scratch_database"] = make_url(url).database if req.keep else None
    return results


def _load(
    engine: Engine,
    spec: Any,
    model_dir: Any,
    made: VectorSet,
    merchant_of: np.ndarray,
    results: dict[str, Any],
) -> np.ndarray:
    labels = [spec.labels[i] for i in made.labels]
    t0 = time.perf_counter()
    with engine.begin() as conn:
        model_id = repository.register_model(conn, spec=spec, path=str(model_dir))
        repository.drop_hnsw_index(conn, model_id=model_id)
        ids = repository.copy_catalog(
            conn,
            model_id=model_id,
            merchants=[f"m{m:03d}" for m in merchant_of],
            labels=labels,
            label_indices=made.labels.tolist(),
            confidences=made.confidences.tolist(),
        )
        repository.copy_embeddings(
            conn,
            rows=(EmbeddingRow(i, model_id, v) for i, v in zip(ids, made.vectors, strict=True)),
            upsert=False,
        )
    results["load_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    repository.build_hnsw_index_concurrently(
        engine, model_id=model_id, embedding_dim=spec.embedding_dim
    )
    results["build_s"] = round(time.perf_counter() - t0, 1)
    with engine.connect() as conn:
        index = hnsw_index_name(model_id)
        size = conn.execute(text(f"SELECT pg_relation_size('{index}')")).scalar_one()
        results["index"] = {
            "name": index,
            "type": "hnsw, vector_cosine_ops",
            "m": 16,
            "ef_construction": 64,
            "size_mb": round(int(size) / 2**20, 1),
        }
    return np.asarray(ids)


def _read_catalog(
    engine: Engine, labels: tuple[str, ...], progress: ProgressFactory
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """A kept scratch database's ids, vectors, merchant numbers and label indices."""
    with engine.connect() as conn:
        if conn.execute(text("SELECT to_regclass('embeddings') IS NULL")).scalar_one():
            return None
        total = int(conn.execute(text("SELECT count(*) FROM embeddings")).scalar_one())
        rows = conn.execution_options(yield_per=20_000).execute(
            text(
                "SELECT e.image_id, e.embedding, i.merchant_id, p.label FROM embeddings e "
                "JOIN images i ON i.id = e.image_id JOIN predictions p USING (image_id, model_id) "
                "ORDER BY e.image_id"
            ).columns(embedding=VECTOR())
        )
        ids, vectors, merchants, label_of = [], [], [], []
        with progress("reading the kept catalog", total) as tick:
            for row in rows:
                ids.append(row.image_id)
                vectors.append(row.embedding)
                merchants.append(int(row.merchant_id.removeprefix("m")))
                label_of.append(labels.index(row.label))
                tick(1)
    return (
        np.asarray(ids),
        np.asarray(vectors, dtype=np.float32),
        np.asarray(merchants),
        np.asarray(label_of),
    )


def _measure_all(
    conn: Connection,
    made: VectorSet,
    ids: np.ndarray,
    merchant_of: np.ndarray,
    labels: tuple[str, ...],
    req: SearchBench,
) -> dict[str, Any]:
    rng = np.random.default_rng(req.seed + 2)
    everyone = np.ones(len(ids), dtype=bool)
    plain: list[Case] = [(q, None, None, everyone) for q in made.queries]
    merchants = rng.integers(0, req.merchants, len(made.queries))
    by_merchant: list[Case] = [
        (q, f"m{m:03d}", None, merchant_of == m)
        for q, m in zip(made.queries, merchants, strict=True)
    ]
    classes = rng.integers(0, len(labels), len(made.queries))
    by_label: list[Case] = [
        (q, None, labels[c], made.labels == c) for q, c in zip(made.queries, classes, strict=True)
    ]
    out: dict[str, Any] = {}
    default_ef = conn.execute(
        text("SELECT coalesce(nullif(current_setting('vitrine.ef_search', true), ''), '40')")
    ).scalar_one()
    out["ef_search"] = int(default_ef)
    _measure(conn, made.vectors, ids, plain, out, "")
    _measure(conn, made.vectors, ids, by_merchant, out, "filtered_")
    _measure(conn, made.vectors, ids, by_label, out, "label_filtered_")
    out["exact_p50_ms"] = _exact_p50(conn, made.queries[:EXACT_QUERIES])
    sweep = []
    for ef in req.ef_search:
        conn.execute(text(f"SET vitrine.ef_search = {int(ef)}"))
        row: dict[str, Any] = {"ef_search": int(ef)}
        _measure(conn, made.vectors, ids, plain, row, "")
        sweep.append(row)
    conn.execute(text("RESET vitrine.ef_search"))
    if sweep:
        out["ef_search_sweep"] = sweep
    return out


def _measure(
    conn: Connection,
    vectors: np.ndarray,
    ids: np.ndarray,
    cases: Sequence[Case],
    out: dict[str, Any],
    prefix: str,
) -> None:
    """Median and 95th percentile latency, recall@10 against numpy, short answers.

    Every query runs once unmeasured first: the figures are a warm server's, whose cache
    holds the index and the rows these queries touch (a fresh or restarted server reads
    them from disk first; `docs/sql.md` gives both).
    """
    for query, merchant, label, _ in cases:
        repository.similar_to_vector(conn, embedding=query, k=K, merchant_id=merchant, label=label)
    times, recalls, short = [], [], 0
    for query, merchant, label, allowed in cases:
        t0 = time.perf_counter()
        got = repository.similar_to_vector(
            conn, embedding=query, k=K, merchant_id=merchant, label=label
        )
        times.append(time.perf_counter() - t0)
        candidates = np.flatnonzero(allowed)
        scores = vectors[candidates] @ query
        top = np.argpartition(-scores, K)[:K] if len(scores) > K else np.arange(len(scores))
        best = candidates[top]
        truth = set(ids[best].tolist())
        recalls.append(len(truth & {n.image_id for n in got}) / max(1, len(truth)))
        short += len(got) < min(K, len(candidates))
    out[f"{prefix}p50_ms"] = round(float(np.percentile(times, 50)) * 1000, 2)
    out[f"{prefix}p95_ms"] = round(float(np.percentile(times, 95)) * 1000, 2)
    out[f"{prefix}recall_at_10"] = round(float(np.mean(recalls)), 4)
    out[f"{prefix}short_results"] = int(short)


def _exact_p50(conn: Connection, queries: np.ndarray) -> float:
    """The same search by sequential scan and sort: what the index saves."""
    times = []
    conn.execute(text("SET enable_indexscan = off"))
    try:
        for query in queries:
            literal = "[" + ",".join(f"{x:.7g}" for x in query) + "]"
            t0 = time.perf_counter()
            conn.execute(
                text(
                    "SELECT image_id FROM embeddings ORDER BY embedding <=> CAST(:q AS vector) "
                    "LIMIT :k"
                ),
                {"q": literal, "k": K},
            ).all()
            times.append(time.perf_counter() - t0)
    finally:
        conn.execute(text("RESET enable_indexscan"))
    return round(float(np.median(times)) * 1000, 1)


def _scratch_database(database_url: str, *, reuse: bool) -> str:
    """Create an empty `<database>_bench_search` beside the configured database (with
    `reuse`, keep one that exists)."""
    url = make_url(database_url)
    name = f"{url.database}_bench_search"
    admin = make_engine(database_url)
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).first()
            if exists and reuse:
                return url.set(database=name).render_as_string(hide_password=False)
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except DBAPIError as exc:
        if "permission denied" in str(exc.orig):
            raise UserError(
                f"bench search needs a scratch database and role {url.username} may not "
                "create one: grant it CREATEDB, or run the bench against vitrine's embedded "
                "database (unset DATABASE_URL)"
            ) from None
        raise
    finally:
        admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def _drop_database(database_url: str, scratch_url: str) -> None:
    name = make_url(scratch_url).database
    admin = make_engine(database_url)
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
