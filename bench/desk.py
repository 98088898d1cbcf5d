"""`vitrine bench desk`: the review desk's page times on a catalog of N images.

Fills a scratch database (`<database>_bench_desk_<N>`, migrated to head, dropped
afterwards unless `--keep`; `--reuse` measures a kept one again, migrated to head first)
by COPY with what a busy catalog holds, then times the desk's real pages, rendered by the
real app (`vitrine.api.app:create_app`, loaded by name as `vitrine serve` loads it)
through `httpx.ASGITransport`: no network, no server, logged in the way a person logs in
(an API token typed into `/desk/login`).

What the catalog holds (shares of N, drawn with `--seed`):

- done images of ~40 merchants of Zipf-like sizes, newest last, each with the active
  model's prediction (top 3, ~10 % under the low-confidence threshold 0.6, 1.5 % flagged
  unknown), its embedding (clustered by class, HNSW index built afterwards as a backfill
  builds it), a perceptual hash (clustered by class) and a quality row (~8 % failing one
  listing-photo rule); 5 % declare a category the model disagrees with;
- 0.3 % re-uploads of an earlier image's bytes (same sha256) and 0.7 % edited copies
  (hash 1-28 bits away), half by another merchant: ~2 % of images have a near-duplicate,
  recorded in `duplicate_pairs` as the workers record them (`record_duplicates`);
- review photos for 8 % of listings (~15 % flagged by `review_mismatches`);
- `label_corrections` for ~10 % of images, taken from the queues a person works (low
  confidence, wrong categories, quality, review mismatches, near-duplicates) and the item
  page, by six people over 90 days; the last 30 days' rows carry an `action_id` (bulk
  approvals share one), the older ones predate the column;
- `pair_decisions` for half the near-duplicate pairs (not_duplicate, same_product,
  delist_one) and half the flagged review photos (matches, does_not_match).

Pages are found, not listed: the queues are the links of the grid page's navigation, and
"next" pages follow the page's own next link (page 2, and page 12 as the deep one, its
next links followed on the way), so queues the desk gains, and whatever keyset each
pages by, are measured too. The grid's deep page is the one before the image 90 % down.
Each page is fetched once to warm (plans, caches), then `--runs` times; the median and
the slowest are reported, for a platform desk (every merchant) and for the biggest
merchant's own desk (row-level security). A page whose warm fetch took longer than
`--page-budget-s` is not fetched again: that one time is its figure (`runs` 1). Each page
also says how long its SQL took and which statement was the slowest (and the repository
function that ran it), so a slow page names its query.

Size: one job, a busy desk measured; most of it is the fill, one function per table
COPYed, each drawing what that table holds in a real catalog, then the page walk.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np
import psycopg
from sqlalchemy import Connection, Engine, event, make_url, text
from sqlalchemy.exc import DBAPIError

from vitrine.bench.search import _drop_database
from vitrine.db import repository
from vitrine.db.engine import make_engine
from vitrine.db.migrate import head_revision
from vitrine.db.repository import EmbeddingRow
from vitrine.db.types import ModelRow
from vitrine.ops.context import Context
from vitrine.ops.errors import UserError
from vitrine.ops.progress import ProgressFactory, Tick, no_progress
from vitrine.ops.schema import upgrade_database

BASE_URL = "http://desk.test"
HASH_BITS = 320
LOW_CONFIDENCE = 0.6  # the desk's default `below`
PEOPLE = ("desk-anna", "desk-ben", "desk-chloe", "desk-dev", "desk-emil", "desk-fatou")
#: Share of N: exact re-uploads, edited copies, listings with a review photo, corrections.
EXACT_COPIES, EDITED_COPIES, REVIEWED, CORRECTED = 0.003, 0.007, 0.08, 0.10
UNKNOWN, WRONG_DECLARED, NO_DECLARED, QUALITY_FAILS = 0.015, 0.05, 0.05, 0.08
SLOW_MS = 100.0
DEEP_HOPS = 10  # a queue's deep page: the next links followed this many times past page 2
DUPLICATE_BATCH = 2_000  # images per `record_duplicates` call
SQL_CHARS = 400  # of the slowest statement, per page
PAGES_GUESS = 25  # pages per session, for the progress bar (queues are found as it goes)
#: An item page with history, first that finds one: a decided near-duplicate pair and a
#: label decision, a decided pair, a label decision (within the session's merchant).
_MINE = "(CAST(:m AS text) IS NULL OR i.merchant_id = :m)"
BUSY_ITEMS = (
    "SELECT min(d.image_id) FROM pair_decisions d JOIN images i ON i.id = d.image_id "
    "JOIN label_corrections c ON c.image_id IN (d.image_id, d.other_image_id) "
    f"WHERE d.kind = 'duplicate' AND {_MINE}",
    "SELECT min(d.image_id) FROM pair_decisions d JOIN images i ON i.id = d.image_id "
    f"WHERE d.kind = 'duplicate' AND {_MINE}",
    f"SELECT min(c.image_id) FROM label_corrections c JOIN images i ON i.id = c.image_id "
    f"WHERE {_MINE}",
)


@dataclass(frozen=True)
class DeskBench:
    images: int = 100_000
    runs: int = 5
    seed: int = 2026
    page_budget_s: float = 10.0  # a page slower than this when warming is timed once
    keep: bool = False  # keep the scratch database afterwards
    reuse: bool = False  # measure a kept scratch database again (migrated to head first)


def run_desk_bench(
    ctx: Context, req: DeskBench, *, progress: ProgressFactory = no_progress
) -> dict[str, Any]:
    if req.images < 100:
        raise UserError("bench desk needs --images >= 100")
    started = time.perf_counter()
    url, existed = _scratch_database(ctx.database_url(), images=req.images, reuse=req.reuse)
    out: dict[str, Any] = {"images": req.images, "runs": req.runs, "seed": req.seed}
    try:
        upgrade_database(url, ctx.settings.model_dir)  # a kept one gains new migrations
        engine = make_engine(url)
        try:
            kept = _count(engine, "images") if existed else 0
            if kept == req.images:
                out["reused"] = True
            else:
                if kept:
                    raise UserError(
                        f"the kept scratch database holds {kept} images, not {req.images}: "
                        "run without --reuse to fill it again"
                    )
                t0 = time.perf_counter()
                out.update(_fill(engine, req, progress))
                out["fill_s"] = round(time.perf_counter() - t0, 1)
            out.update(_sizes(engine))
            bench_ctx = Context(
                ctx.settings.model_copy(update={"rate_limit_storage": "memory"}),
                _database_url=url,
                _revision=head_revision(),
            )
            try:
                out.update(asyncio.run(_time_pages(bench_ctx, engine, req, progress)))
            finally:
                bench_ctx.engine().dispose()  # the app's pool, before the database goes
        finally:
            engine.dispose()
    finally:
        if not req.keep:
            _drop_database(ctx.database_url(), url)
    out["scratch_database"] = make_url(url).database if req.keep else None
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


# ------------------------------------------------------------------------ scratch database


def _scratch_database(database_url: str, *, images: int, reuse: bool) -> tuple[str, bool]:
    """`<database>_bench_desk_<N>` beside the configured database, made empty (with
    `reuse`, one that exists is kept); its URL and whether it was kept. One per size, so
    a smoke run leaves a kept full-size catalog alone."""
    url = make_url(database_url)
    name = f"{url.database}_bench_desk_{images}"
    scratch = url.set(database=name).render_as_string(hide_password=False)
    admin = make_engine(database_url)
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            found = "SELECT count(*) FROM pg_database WHERE datname = :n"
            if reuse and conn.execute(text(found), {"n": name}).scalar_one():
                return scratch, True
    finally:
        admin.dispose()
    _drop_database(database_url, scratch)
    admin = make_engine(database_url)
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except DBAPIError as exc:
        if "permission denied" not in str(exc.orig):
            raise
        raise UserError(
            f"bench desk needs a scratch database and role {url.username} may not create "
            "one: grant it CREATEDB, or run it against vitrine's embedded database (unset "
            "DATABASE_URL)"
        ) from None
    finally:
        admin.dispose()
    return scratch, False


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        if conn.execute(text("SELECT to_regclass(:t) IS NULL"), {"t": table}).scalar_one():
            return 0
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def _sizes(engine: Engine) -> dict[str, Any]:
    """Rows of what the desk reads, as the database holds them now."""
    with engine.connect() as conn:
        pairs = conn.execute(text("SELECT to_regclass('pair_decisions') IS NOT NULL")).scalar()
        decided = (
            conn.execute(
                text("SELECT kind, count(*) FROM pair_decisions GROUP BY kind ORDER BY kind")
            ).all()
            if pairs
            else []
        )
        merchants = conn.execute(text("SELECT count(DISTINCT merchant_id) FROM images")).scalar()
    return {
        "merchants": int(merchants or 0),
        "label_corrections": _count(engine, "label_corrections"),
        "pair_decisions": sum(int(n) for _, n in decided) if pairs else None,
        "pair_decisions_by_kind": {str(k): int(n) for k, n in decided},
        "duplicate_pairs": _count(engine, "duplicate_pairs"),
        "reviews": _count(engine, "reviews"),
        "image_quality": _count(engine, "image_quality"),
    }


# ------------------------------------------------------------------------------- the fill


@dataclass
class _Catalog:
    """What was written, for the decisions and the pages."""

    ids: np.ndarray
    merchant_of: np.ndarray
    label_of: np.ndarray  # the model's label index
    confidence: np.ndarray
    unknown: np.ndarray
    declared_wrong: np.ndarray
    quality_fails: np.ndarray
    copies: list[tuple[int, int]] = field(default_factory=list)  # (original pos, copy pos)
    reviews: list[tuple[int, int, bool]] = field(default_factory=list)  # (id, pos, flagged)


def _fill(engine: Engine, req: DeskBench, progress: ProgressFactory) -> dict[str, Any]:
    rng = np.random.default_rng(req.seed)
    with engine.connect() as conn:
        model = repository.active_model(conn)
    if model is None:  # pragma: no cover - upgrade_database registers the shipped model
        raise UserError("the scratch database has no active model")
    phash_indexes = _indexes(engine, "images", "hnsw")
    with engine.begin() as conn:
        for name, _ in phash_indexes:  # built once at the end, as a backfill would
            conn.execute(text(f"DROP INDEX {name}"))
        repository.drop_hnsw_index(conn, model_id=model.id)
        cat = _copy_images(conn, model.id, model.labels, req.images, rng, progress)
        _copy_embeddings(conn, model.id, model.embedding_dim, cat, rng, progress)
        _copy_quality(conn, cat, rng, progress)
        _copy_reviews(conn, model, cat, rng, progress)
        corrections = _copy_corrections(conn, model, cat, rng, progress)
        pairs = _copy_pair_decisions(conn, cat, rng, progress)
    with progress("building the hash index", 1) as tick:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("SET maintenance_work_mem = '512MB'"))
            for _, definition in phash_indexes:
                conn.execute(text(definition))
        tick(1)
    _record_duplicates(engine, cat, progress)
    with progress("building the vector index, VACUUM ANALYZE", 1) as tick:
        repository.build_hnsw_index_concurrently(
            engine, model_id=model.id, embedding_dim=model.embedding_dim
        )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM (ANALYZE)"))
        tick(1)
    return {
        "near_duplicate_pairs_made": len(cat.copies),
        "corrections_without_action_id": corrections,
        "pair_decisions_missing": pairs,
    }


def _record_duplicates(engine: Engine, cat: _Catalog, progress: ProgressFactory) -> None:
    """The near-duplicate pairs the workers record once an image's hash is committed
    (`record_duplicates`, one hash-index probe per image), a worker's batch at a time;
    nothing where the schema keeps no pairs (before `duplicate_pairs`)."""
    with engine.connect() as conn:
        kept = conn.execute(text("SELECT to_regclass('duplicate_pairs') IS NOT NULL")).scalar()
    if not kept:
        return
    ids = [int(i) for i in cat.ids]
    with progress("recording near-duplicate pairs", len(ids)) as tick:
        for start in range(0, len(ids), DUPLICATE_BATCH):
            batch = ids[start : start + DUPLICATE_BATCH]
            with engine.begin() as conn:
                repository.record_duplicates(conn, image_ids=batch)
            tick(len(batch))


def _indexes(engine: Engine, table: str, method: str) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                "AND tablename = :t AND indexdef ILIKE :m"
            ),
            {"t": table, "m": f"% USING {method} %"},
        ).all()
    return [(str(r.indexname), str(r.indexdef)) for r in rows]


def _copy(
    conn: Connection,
    statement: str,
    rows: Iterable[Sequence[Any]],
    tick: Tick,
    every: int = 5_000,
) -> int:
    """COPY `rows` in the connection's transaction, ticking every `every` rows."""
    driver = conn.connection.driver_connection
    if driver is None:  # pragma: no cover - only for detached connections
        raise RuntimeError("connection has no DBAPI connection")
    sent = 0
    try:
        with driver.cursor() as cur, cur.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
                sent += 1
                if sent % every == 0:
                    tick(every)
    except psycopg.Error as exc:
        raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc
    tick(sent % every)
    return sent


def _next_ids(conn: Connection, sequence: str, n: int) -> np.ndarray:
    rows = conn.execute(
        text(f"SELECT nextval('{sequence}') FROM generate_series(1, :n)"), {"n": n}
    ).scalars()
    return np.asarray([int(i) for i in rows], dtype=np.int64)


def _copy_images(
    conn: Connection,
    model_id: int,
    labels: Sequence[str],
    n: int,
    rng: np.random.Generator,
    progress: ProgressFactory,
) -> _Catalog:
    """Done images and their predictions; copies of earlier images where drawn."""
    n_labels = len(labels)
    merchants = int(np.clip(n // 2500, 4, 40))
    weights = 1 / np.arange(1, merchants + 1)
    merchant_of = rng.choice(merchants, n, p=weights / weights.sum())
    label_of = rng.integers(0, n_labels, n)
    confidence = 0.1 + 0.9 * rng.beta(4, 1, n)
    kind = rng.random(n)
    exact, edited = (
        kind < EXACT_COPIES,
        (kind >= EXACT_COPIES) & (kind < EXACT_COPIES + EDITED_COPIES),
    )
    exact[0] = edited[0] = False
    centroids = rng.random((n_labels, HASH_BITS)) < 0.5
    bits = centroids[label_of] ^ (rng.random((n, HASH_BITS)) < 0.3)
    sha = [hashlib.sha256(f"desk-bench-{i}".encode()).hexdigest() for i in range(n)]
    copies = []
    for pos in np.flatnonzero(exact | edited):
        original = int(rng.integers(0, pos))
        copies.append((original, int(pos)))
        label_of[pos], bits[pos] = label_of[original], bits[original]
        if rng.random() < 0.5:
            merchant_of[pos] = merchant_of[original]
        if exact[pos]:
            sha[pos] = sha[original]
        else:
            flip = rng.choice(HASH_BITS, int(rng.integers(1, 29)), replace=False)
            bits[pos, flip] ^= True
    hashes = np.where(bits, ord("1"), ord("0")).astype(np.uint8)
    unknown = rng.random(n) < UNKNOWN
    declared = rng.random(n)
    declared_wrong = declared < WRONG_DECLARED
    other = (label_of + rng.integers(1, n_labels, n)) % n_labels
    tiny = rng.random(n) < 0.7
    quality_fails = rng.random(n) < QUALITY_FAILS
    side = np.where(rng.random(n) < 0.5, 2000, rng.integers(1000, 3000, n))
    formats = rng.choice(["JPEG", "PNG", "WEBP"], n, p=[0.7, 0.2, 0.1])
    ids = _next_ids(conn, "images_id_seq", n)
    now = datetime.now(UTC)
    first = now - timedelta(days=365)
    step = timedelta(days=365) / n

    def image_rows() -> Iterable[tuple[Any, ...]]:
        for pos in range(n):
            image_id = int(ids[pos])
            label = labels[label_of[pos]]
            if declared_wrong[pos]:
                declared_label: str | None = labels[other[pos]]
            elif declared[pos] < WRONG_DECLARED + NO_DECLARED:
                declared_label = None
            else:
                declared_label = label.lower() if pos % 7 == 0 else label
            created = first + step * pos
            yield (
                image_id,
                f"shop-{merchant_of[pos]:02d}",
                f"bench://{image_id}",
                f"sku-{image_id}",
                sha[pos],
                int(side[pos]),
                int(side[pos] * 3 // 4),
                str(formats[pos]),
                "done",
                created,
                created + timedelta(seconds=2),
                declared_label,
                hashes[pos].tobytes().decode(),
            )

    def prediction_rows() -> Iterable[tuple[Any, ...]]:
        for pos in range(n):
            c = float(confidence[pos])
            top = [int(label_of[pos]), int(other[pos]), int((other[pos] + 1) % n_labels)]
            if top[2] == top[0]:
                top[2] = (top[2] + 1) % n_labels
            scores = [c, (1 - c) * 0.7, (1 - c) * 0.2]
            top_k = json.dumps(
                [
                    {"label": labels[k], "score": round(s, 5)}
                    for k, s in zip(top, scores, strict=True)
                ]
            )
            if declared_wrong[pos]:
                declared_score = 1e-6 if tiny[pos] else (1 - c) * 0.7
            else:
                declared_score = c
            yield (
                int(ids[pos]),
                model_id,
                labels[label_of[pos]],
                int(label_of[pos]),
                c,
                top_k,
                declared_score,
                float(rng.gamma(2.0, 0.1)) + (1.0 if unknown[pos] else 0.0),
                bool(unknown[pos]),
            )

    with progress("COPY images", n) as tick:
        _copy(
            conn,
            "COPY images (id, merchant_id, uri, sku, sha256, width, height, format, status, "
            "created_at, processed_at, declared_label, phash) FROM STDIN",
            image_rows(),
            tick,
        )
    with progress("COPY predictions", n) as tick:
        _copy(
            conn,
            "COPY predictions (image_id, model_id, label, label_index, confidence, top_k, "
            "declared_score, unknown_score, unknown) FROM STDIN",
            prediction_rows(),
            tick,
        )
    return _Catalog(
        ids=ids,
        merchant_of=merchant_of,
        label_of=label_of,
        confidence=confidence,
        unknown=unknown,
        declared_wrong=declared_wrong,
        quality_fails=quality_fails,
        copies=copies,
    )


def _copy_embeddings(
    conn: Connection,
    model_id: int,
    dim: int,
    cat: _Catalog,
    rng: np.random.Generator,
    progress: ProgressFactory,
) -> None:
    n = len(cat.ids)
    centroids = rng.normal(size=(int(cat.label_of.max()) + 1, dim)).astype(np.float32)
    vectors = centroids[cat.label_of] + 0.8 * rng.normal(size=(n, dim)).astype(np.float32)
    for original, pos in cat.copies:
        vectors[pos] = vectors[original] + 0.05 * rng.normal(size=dim).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with progress("COPY embeddings", n) as tick:

        def rows() -> Iterable[EmbeddingRow]:
            for pos in range(n):
                if pos and pos % 5_000 == 0:
                    tick(5_000)
                yield EmbeddingRow(int(cat.ids[pos]), model_id, vectors[pos])
            tick(n % 5_000 or 5_000)

        repository.copy_embeddings(conn, rows=rows(), upsert=False)


def _copy_quality(
    conn: Connection, cat: _Catalog, rng: np.random.Generator, progress: ProgressFactory
) -> None:
    """One row per image, as the worker writes them; a failing rule where drawn."""
    n = len(cat.ids)
    defect = rng.integers(0, 7, n)

    def rows() -> Iterable[tuple[Any, ...]]:
        for pos in range(n):
            row = [
                int(rng.integers(1200, 3000)),  # longest side
                float(rng.uniform(0.93, 1.0)),  # white background share
                float(rng.uniform(0.3, 0.7)),  # fill ratio
                float(rng.uniform(0.6, 0.95)),  # object span
                False,  # touches border
                float(rng.uniform(10, 60)),  # sharpness
                float(rng.uniform(180, 255)),  # highlight luminance
                float(rng.uniform(60, 230)),  # object luminance
            ]
            if cat.quality_fails[pos]:  # one rule fails: (column, value)
                column, value = (
                    (0, int(rng.integers(500, 1000))),  # small_image
                    (1, float(rng.uniform(0.5, 0.89))),  # background_not_white
                    (3, float(rng.uniform(0.2, 0.49))),  # product_too_small
                    (4, True),  # product_cut_off
                    (5, float(rng.uniform(2, 8))),  # blurry
                    (6, float(rng.uniform(80, 150))),  # too_dark
                    (7, float(rng.uniform(246, 254))),  # too_bright
                )[int(defect[pos])]
                row[column] = value
            yield (int(cat.ids[pos]), *row)

    with progress("COPY image_quality", n) as tick:
        _copy(
            conn,
            "COPY image_quality (image_id, longest_side_px, white_background_share, "
            "fill_ratio, object_span, touches_border, sharpness, highlight_luminance, "
            "object_luminance) FROM STDIN",
            rows(),
            tick,
        )


def _copy_reviews(
    conn: Connection,
    model: ModelRow,
    cat: _Catalog,
    rng: np.random.Generator,
    progress: ProgressFactory,
) -> None:
    """Shoppers' review photos of some listings, scored as the worker scores them."""
    model_id, labels = model.id, model.labels
    positions = np.flatnonzero(rng.random(len(cat.ids)) < REVIEWED)
    ids = _next_ids(conn, "reviews_id_seq", len(positions))
    n_labels = len(labels)
    now = datetime.now(UTC)

    def rows() -> Iterable[tuple[Any, ...]]:
        for review_id, pos in zip(ids, positions, strict=True):
            listing = labels[cat.label_of[pos]]
            other_class = rng.random() < 0.08
            label = (
                labels[(cat.label_of[pos] + rng.integers(1, n_labels)) % n_labels]
                if other_class
                else listing
            )
            match = float(rng.uniform(0.05, 0.5) if other_class else rng.beta(8, 2))
            flagged = other_class or match < LOW_CONFIDENCE
            cat.reviews.append((int(review_id), int(pos), bool(flagged)))
            image_id = int(cat.ids[pos])
            yield (
                int(review_id),
                f"shop-{cat.merchant_of[pos]:02d}",
                f"sku-{image_id}",
                f"r-{review_id}",
                f"bench-review://{review_id}",
                "done",
                label,
                float(rng.uniform(0.5, 1.0)),
                listing,
                match,
                model_id,
                now - timedelta(days=float(rng.uniform(0, 90))),
            )

    with progress("COPY reviews", len(positions)) as tick:
        _copy(
            conn,
            "COPY reviews (id, merchant_id, sku, review_ref, uri, status, label, confidence, "
            "listing_label, match_score, model_id, processed_at) FROM STDIN",
            rows(),
            tick,
        )


class _Actions:
    """Who decided when, and the action ids that group one person's clicks (a bulk
    approval is one action); rows older than `with_ids_since` have none (they predate
    the column)."""

    def __init__(self, rng: np.random.Generator, with_ids_since: datetime) -> None:
        self.rng, self.since = rng, with_ids_since
        self.now = datetime.now(UTC)

    def times(self, n: int) -> list[tuple[str, datetime, uuid.UUID | None]]:
        """`n` (person, time, action id), oldest first."""
        people = self.rng.choice(len(PEOPLE), n, p=[0.3, 0.25, 0.15, 0.12, 0.1, 0.08])
        ages = np.sort(self.rng.uniform(0, 90, n))[::-1]
        out = []
        current: dict[int, tuple[uuid.UUID, int]] = {}
        for person, age in zip(people, ages, strict=True):
            at = self.now - timedelta(days=float(age))
            action = None
            if at >= self.since:
                held = current.get(int(person))
                if held is None or held[1] <= 0:
                    size = 1 if self.rng.random() < 0.7 else int(self.rng.integers(2, 25))
                    held = (uuid.UUID(bytes=self.rng.bytes(16), version=4), size)
                action = held[0]
                current[int(person)] = (held[0], held[1] - 1)
            out.append((PEOPLE[int(person)], at, action))
        return out


def _copy_corrections(
    conn: Connection,
    model: ModelRow,
    cat: _Catalog,
    rng: np.random.Generator,
    progress: ProgressFactory,
) -> int:
    """~10 % of images decided, from the queues people work; how many rows have no
    action id."""
    model_id, labels = model.id, model.labels
    n = len(cat.ids)
    total = max(1, int(n * CORRECTED))
    low = np.flatnonzero(cat.confidence < LOW_CONFIDENCE)
    copies = np.asarray([pos for _, pos in cat.copies], dtype=np.int64)
    flagged_reviews = np.asarray([pos for _, pos, f in cat.reviews if f], dtype=np.int64)
    sources: list[tuple[str | None, np.ndarray, float]] = [
        ("low_confidence", low, 0.40),
        ("label_mismatches", np.flatnonzero(cat.declared_wrong), 0.15),
        ("quality", np.flatnonzero(cat.quality_fails), 0.15),
        ("review_mismatches", flagged_reviews, 0.05),
        ("duplicates", copies, 0.03),
        (None, np.arange(n), 0.22),
    ]
    picked: list[tuple[str | None, int]] = []
    for queue, candidates, share in sources:
        k = min(len(candidates), int(total * share))
        picked += [(queue, int(p)) for p in rng.choice(candidates, k, replace=False)]
    order = rng.permutation(len(picked))
    has_column = _has_column(conn, "label_corrections", "action_id")
    actions = _Actions(rng, datetime.now(UTC) - timedelta(days=30)).times(len(picked))
    missing = 0

    def rows() -> Iterable[tuple[Any, ...]]:
        nonlocal missing
        n_labels = len(labels)
        for (queue, pos), (who, at, action) in zip(
            (picked[i] for i in order), actions, strict=True
        ):
            model_label = labels[cat.label_of[pos]]
            relabel = rng.random() < (0.8 if queue == "label_mismatches" else 0.3)
            label = (
                labels[(cat.label_of[pos] + rng.integers(1, n_labels)) % n_labels]
                if relabel
                else model_label
            )
            previous = "unknown" if cat.unknown[pos] else model_label
            missing += action is None
            row = [int(cat.ids[pos]), model_id, "relabel" if relabel else "approve", label]
            row += [previous, queue, who, at]
            yield (*row, action) if has_column else tuple(row)

    columns = "image_id, model_id, action, label, previous_label, queue, decided_by, decided_at"
    with progress("COPY label_corrections", len(picked)) as tick:
        _copy(
            conn,
            f"COPY label_corrections ({columns}{', action_id' if has_column else ''}) FROM STDIN",
            rows(),
            tick,
            every=1_000,
        )
    return missing


def _copy_pair_decisions(
    conn: Connection, cat: _Catalog, rng: np.random.Generator, progress: ProgressFactory
) -> str | None:
    """Half the near-duplicate pairs and half the flagged review photos decided; None,
    or what is missing from the schema."""
    if conn.execute(text("SELECT to_regclass('pair_decisions') IS NULL")).scalar_one():
        return "table pair_decisions (migration 0016) is not in this schema"
    duplicate = [pair for pair in cat.copies if rng.random() < 0.5]
    reviews = [(r, pos) for r, pos, flagged in cat.reviews if flagged and rng.random() < 0.5]
    picked: list[tuple[str, Any]] = [("duplicate", p) for p in duplicate]
    picked += [("review", r) for r in reviews]
    order = rng.permutation(len(picked))
    actions = _Actions(rng, datetime.now(UTC) - timedelta(days=90)).times(len(picked))

    def rows() -> Iterable[tuple[Any, ...]]:
        for (kind, what), (who, at, action) in zip(
            (picked[i] for i in order), actions, strict=True
        ):
            if kind == "duplicate":
                a, b = sorted((int(cat.ids[what[0]]), int(cat.ids[what[1]])))
                roll = rng.random()
                decision = (
                    "not_duplicate"
                    if roll < 0.2
                    else "same_product"
                    if roll < 0.65
                    else "delist_one"
                )
                delisted = b if decision == "delist_one" else None
                yield ("duplicate", a, b, None, decision, delisted, action, who, at)
            else:
                review_id, pos = what
                decision = "matches" if rng.random() < 0.4 else "does_not_match"
                yield (
                    "review",
                    int(cat.ids[pos]),
                    None,
                    review_id,
                    decision,
                    None,
                    action,
                    who,
                    at,
                )

    with progress("COPY pair_decisions", len(picked)) as tick:
        _copy(
            conn,
            "COPY pair_decisions (kind, image_id, other_image_id, review_id, decision, "
            "delisted_image_id, action_id, decided_by, decided_at) FROM STDIN",
            rows(),
            tick,
            every=1_000,
        )
    return None


def _has_pairs(conn: Connection) -> bool:
    return bool(conn.execute(text("SELECT to_regclass('pair_decisions') IS NOT NULL")).scalar())


def _has_column(conn: Connection, table: str, column: str) -> bool:
    return bool(
        conn.execute(
            text(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = :t AND column_name = :c"
            ),
            {"t": table, "c": column},
        ).first()
    )


# ------------------------------------------------------------------------------ the pages


class _Links(HTMLParser):
    """Every link of a page: (href, id attribute, text)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str, str]] = []
        self._open: list[Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            found = dict(attrs)
            self._open = [found.get("href") or "", found.get("id") or "", ""]

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open[2] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.links.append((self._open[0], self._open[1], self._open[2].strip()))
            self._open = None


def _links(page: str) -> list[tuple[str, str, str]]:
    parser = _Links()
    parser.feed(page)
    return parser.links


def _next_link(page: str) -> str | None:
    """The page's "next page" link, if it has one."""
    for href, ident, label in _links(page):
        if ident == "next" or label.lower().startswith("next"):
            return html.unescape(href)
    return None


class _Statements:
    """How long each SQL statement of the app's engine took, and which repository function
    ran it (`desk.queue_count`), while pages are fetched one at a time."""

    def __init__(self, engine: Engine) -> None:
        self.taken: list[tuple[float, str, str]] = []
        self._started: dict[int, tuple[float, str]] = {}
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self._started[id(cursor)] = (time.perf_counter(), _caller())

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        started = self._started.pop(id(cursor), None)
        if started is not None:
            spent = (time.perf_counter() - started[0]) * 1000
            self.taken.append((spent, started[1], statement))


def _caller() -> str:
    """`module.function` of the nearest repository (else API) frame on the stack."""
    frame: Any = sys._getframe(2)
    fallback = ""
    while frame is not None:
        path = frame.f_code.co_filename.replace("\\", "/")
        if "/db/repository/" in path:
            return f"{Path(path).stem}.{frame.f_code.co_name}"
        if not fallback and "/api/" in path:
            fallback = f"{Path(path).stem}.{frame.f_code.co_name}"
        frame = frame.f_back
    return fallback


@dataclass
class _Timer:
    client: Any  # httpx.AsyncClient
    runs: int
    budget_s: float
    statements: _Statements
    tick: Tick
    pages: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    async def fetch(self, path: str) -> str | None:
        """One untimed fetch (following next links down a queue); None unless 200."""
        answer = await self.client.get(path)
        return answer.text if answer.status_code == 200 else None

    async def get(self, name: str, path: str) -> str | None:
        """Warm once, then time `runs` fetches of `path` (none more when the warm one took
        over the budget: it is the figure); its HTML (None: not 200)."""
        times, body, timed = [], "", 0
        for run in range(self.runs + 1):
            self.statements.taken.clear()
            t0 = time.perf_counter()
            answer = await self.client.get(path)
            spent = (time.perf_counter() - t0) * 1000
            if answer.status_code != 200:
                where = answer.headers.get("location", "")
                detail = " ".join(answer.text.split())[:300]
                self.errors.append(
                    f"{name}: GET {path} answered {answer.status_code}"
                    + (f" -> {where}" if where else "")
                    + (f": {detail}" if detail else "")
                )
                self.tick(1)
                return None
            body = answer.text
            times.append(spent)
            timed = run
            if run == 0 and spent > self.budget_s * 1000:
                break  # the warm fetch alone is the figure
        measured = times[1:] or times
        sql_ms = sum(t for t, _, _ in self.statements.taken)
        ranked = sorted(self.statements.taken, reverse=True)
        slowest = ranked[0] if ranked else (0.0, "", "")
        self.pages[name] = {
            "path": path,
            "median_ms": round(statistics.median(measured), 1),
            "max_ms": round(max(measured), 1),
            "runs": max(1, timed),
            "sql_ms": round(sql_ms, 1),
            "statements": len(self.statements.taken),
            "slowest_sql_ms": round(slowest[0], 1),
            "slowest_sql_from": slowest[1],
            "slowest_sql": " ".join(slowest[2].split())[:SQL_CHARS],
            "top_sql": [f"{t:.1f} ms {who}" for t, who, _ in ranked[:3]],
            "kb": round(len(body.encode()) / 1024, 1),
        }
        self.tick(1)
        return body


async def _time_pages(
    ctx: Context, engine: Engine, req: DeskBench, progress: ProgressFactory
) -> dict[str, Any]:
    import httpx

    from vitrine.api.app import create_app
    from vitrine.ops.api_clients import create_token

    with engine.connect() as conn:
        facts = conn.execute(
            text(
                "SELECT (SELECT array_agg(id ORDER BY id) FROM images) AS ids, "
                "(SELECT merchant_id FROM images GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1) "
                "AS biggest, "
                "(SELECT merchant_id FROM images GROUP BY 1 ORDER BY count(*), 1 LIMIT 1) "
                "AS smallest"
            )
        ).one()
        has_pairs = _has_pairs(conn)
        busy = {
            m: next(
                (
                    int(found)
                    for query in BUSY_ITEMS[0 if has_pairs else 2 :]
                    if (found := conn.execute(text(query), {"m": m}).scalar()) is not None
                ),
                None,
            )
            for m in (None, facts.biggest)
        }
        model = repository.active_model(conn)
    ids: list[int] = list(facts.ids or [])
    labels = list(model.labels) if model else []
    app = create_app(ctx)
    statements = _Statements(ctx.engine())
    out: dict[str, Any] = {"slow_ms": SLOW_MS, "page_budget_s": req.page_budget_s}
    errors: list[str] = []
    tag = secrets.token_hex(3)
    sessions: list[tuple[str, str | None]] = [("pages", None)]
    if facts.biggest:
        sessions.append(("merchant_pages", str(facts.biggest)))
    for key, merchant in sessions:
        token = create_token(ctx, name=f"desk-bench-{key}-{tag}", merchant_id=merchant).token
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            login = await client.post(
                "/desk/login", data={"token": token}, headers={"Origin": BASE_URL}
            )
            if login.status_code != 303 or not client.cookies:
                errors.append(
                    f"{key}: POST /desk/login answered {login.status_code} without a "
                    f"session cookie: {' '.join(login.text.split())[:300]}"
                )
                continue
            who = f"merchant {merchant}" if merchant else "platform"
            with progress(f"desk pages ({who})", PAGES_GUESS) as tick:
                timer = _Timer(client, req.runs, req.page_budget_s, statements, tick)
                await _desk_pages(
                    timer,
                    ids=ids,
                    labels=labels,
                    small_merchant=str(facts.smallest) if merchant is None else None,
                    busy_item=busy[merchant],
                )
                tick(max(0, PAGES_GUESS - len(timer.pages) - len(timer.errors)))
            out[key] = timer.pages
            errors += [f"{key}: {e}" for e in timer.errors]
        if merchant is not None:
            out["merchant"] = merchant
    out["errors"] = errors
    out["slow_pages"] = sorted(
        f"{key}/{name}"
        for key in ("pages", "merchant_pages")
        for name, page in out.get(key, {}).items()
        if page["median_ms"] > SLOW_MS
    )
    return out


async def _desk_pages(
    timer: _Timer,
    *,
    ids: list[int],
    labels: list[str],
    small_merchant: str | None,
    busy_item: int | None,
) -> None:
    """Every page a person at the desk opens, as its links lead there."""
    grid = await timer.get("grid", "/desk")
    if grid is None:
        return
    links = _links(grid)
    if ids:
        await timer.get("grid_deep", f"/desk?before={ids[len(ids) // 10]}")  # 90 % down
    if labels:
        await timer.get("grid_label", f"/desk?label={quote(labels[0], safe='')}")
    await timer.get("grid_label_unknown", "/desk?label=unknown")
    if small_merchant:
        await timer.get("grid_small_merchant", f"/desk?merchant={quote(small_merchant)}")
    queues = []
    for href, _, _ in links:
        path = urlsplit(html.unescape(href)).path
        if path.startswith("/desk/queues/") and path not in queues:
            queues.append(path)
    for path in queues:
        name = "queue_" + path.removeprefix("/desk/queues/").strip("/")
        page = await timer.get(name, path)
        following = _next_link(page) if page else None
        if following is None:
            continue
        second = await timer.get(f"{name}_next", following)
        deep, hops = following, 0
        while second is not None and hops < DEEP_HOPS and (later := _next_link(second)):
            deep, hops = later, hops + 1
            second = await timer.fetch(later)  # on the way down, not timed
        if hops:
            await timer.get(f"{name}_page_{hops + 2}", deep)
    tiles = [h for h, _, _ in links if urlsplit(html.unescape(h)).path.startswith("/desk/items/")]
    if tiles:
        await timer.get("item", urlsplit(html.unescape(tiles[0])).path)
    if busy_item is not None:
        await timer.get("item_decided_duplicate", f"/desk/items/{busy_item}")


def pages_table_rows(results: dict[str, Any], key: str) -> list[tuple[Any, ...]]:
    """(page, median ms, max ms, SQL ms, slowest statement's ms and function) of one
    session's pages, for the CLI's table; slow pages are starred, and "(once)" marks one
    timed a single time (over the budget)."""
    rows = []
    for name, page in results.get(key, {}).items():
        mark = " *" if page["median_ms"] > SLOW_MS else ""
        once = " (once)" if page["runs"] < results.get("runs", 1) else ""
        slowest = f"{page['slowest_sql_ms']:.1f} {page['slowest_sql_from']}".strip()
        rows.append(
            (
                name + mark + once,
                f"{page['median_ms']:.1f}",
                f"{page['max_ms']:.1f}",
                f"{page['sql_ms']:.1f}",
                slowest,
            )
        )
    return rows


__all__ = ["DeskBench", "pages_table_rows", "run_desk_bench"]
