"""Model registry: registration, the one active model, per-model HNSW indexes.

Registration and activation are serialised by a transaction-scoped advisory lock, so
two workers starting together neither race on CREATE INDEX nor on "activate if none".
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import ColumnElement, Connection, Text, func, literal, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from vitrine.db.schema import embeddings, hnsw_index_ddl, hnsw_index_name, models, positive_int
from vitrine.db.types import ModelRow
from vitrine.pipeline.types import ModelSpec

MODELS_LOCK_KEY = 0x76_69_74_72_69_6E_65_6D  # "vitrinem"


def _lock_models(conn: Connection) -> None:
    conn.execute(select(func.pg_advisory_xact_lock(MODELS_LOCK_KEY)))


def ensure_hnsw_index(conn: Connection, *, model_id: int, embedding_dim: int) -> bool:
    """Create model `model_id`'s partial HNSW index if missing; True if it was created.

    Checks the catalog first, so the common case (index exists) takes no lock on
    `embeddings`. Building it does take a SHARE lock on `embeddings` until the caller
    commits, i.e. concurrent result writes wait: register models before a big backfill,
    not during one.
    """
    ddl = hnsw_index_ddl(model_id, embedding_dim)
    exists = conn.execute(
        select(func.to_regclass(literal(hnsw_index_name(model_id), Text)).is_not(None))
    ).scalar_one()
    if exists:
        return False
    conn.execute(text(ddl))
    return True


def drop_hnsw_index(conn: Connection, *, model_id: int) -> None:
    """Drop model `model_id`'s HNSW index (offline bulk loads only).

    Loading many rows is several times faster without the index, then rebuilding it
    with `ensure_hnsw_index` (measured: 20k x 128-d, COPY 0.4 s + build 5.6 s instead of
    28 s with the index maintained row by row). But DROP INDEX takes an ACCESS EXCLUSIVE
    lock on `embeddings` until commit, blocking every reader, and while the index is
    gone nothing checks that model's vector size. Use it for a model that is not
    active, in a maintenance window, or on a fresh database.
    """
    conn.execute(text(f"DROP INDEX IF EXISTS {hnsw_index_name(model_id)}"))


def register_model(
    conn: Connection, *, spec: ModelSpec, path: str, activate_if_none: bool = True
) -> int:
    """Insert or refresh the `models` row for `spec.key`; return its id.

    Creates the model's HNSW index and, if no model is active and `activate_if_none`,
    activates it. Refreshing is for the same model moved or re-described (another path,
    a detector calibrated into its model.json). A key whose stored row has another
    `embedding_dim`, or came from another training run, raises `ValueError`: the stored
    vectors were made by those weights, and `vitrine train` names every run
    `fashion-cnn@1` unless told otherwise, so an overwrite would silently put a new
    model behind the old one's embeddings. Bump the version instead.
    """
    positive_int(spec.embedding_dim, "embedding_dim")
    _lock_models(conn)
    stored = conn.execute(
        select(models.c.embedding_dim, models.c.spec, models.c.path).where(models.c.key == spec.key)
    ).first()
    # Another run first: it is the cause whenever the dimension differs too.
    if stored is not None and _another_run(stored.spec, spec):
        raise ValueError(
            f"model {spec.key!r} is already registered from {stored.path}, trained by "
            f"another run; refusing to overwrite it (give this one another version: "
            f'`vitrine train --version 2`, or model.json\'s "version")'
        )
    if stored is not None and stored.embedding_dim != spec.embedding_dim:
        raise ValueError(
            f"model {spec.key!r} is already registered with embedding_dim="
            f"{stored.embedding_dim}; refusing to change it to {spec.embedding_dim} "
            "(register a new version)"
        )
    ins = pg_insert(models).values(
        key=spec.key,
        name=spec.name,
        version=spec.version,
        embedding_dim=spec.embedding_dim,
        labels=list(spec.labels),
        spec=spec.to_dict(),
        path=str(path),
    )
    # The checks above read the row under the models lock; the WHERE still refuses a
    # changed dimension in SQL should a writer ever bypass the lock (scalar_one then raises).
    stmt = ins.on_conflict_do_update(
        index_elements=[models.c.key],
        set_={
            "name": ins.excluded.name,
            "version": ins.excluded.version,
            "labels": ins.excluded.labels,
            "spec": ins.excluded.spec,
            "path": ins.excluded.path,
        },
        where=models.c.embedding_dim == ins.excluded.embedding_dim,
    ).returning(models.c.id)
    model_id = conn.execute(stmt).scalar_one()
    ensure_hnsw_index(conn, model_id=model_id, embedding_dim=spec.embedding_dim)
    if activate_if_none:
        none_active = conn.execute(select(models.c.id).where(models.c.is_active)).first() is None
        if none_active:
            conn.execute(update(models).where(models.c.id == model_id).values(is_active=True))
    return int(model_id)


def _another_run(stored: dict[str, Any], spec: ModelSpec) -> bool:
    """Whether the stored spec and `spec` describe weights of different training runs: their
    data or their training record (recipe, config, every epoch's history) differ."""
    new = json.loads(json.dumps(spec.to_dict()))  # as the JSONB column gives it back
    return any(stored.get(key) != new.get(key) for key in ("data_fingerprint", "training"))


def activate_model(conn: Connection, *, key: str) -> None:
    """Make `key` the one active model, atomically (one transaction, serialised).

    Readers in other transactions see either the old or the new active model, never
    none or two. Raises `LookupError` if no model has that key.
    """
    _lock_models(conn)
    target = conn.execute(select(models.c.id).where(models.c.key == key)).scalar_one_or_none()
    if target is None:
        known = conn.execute(select(models.c.key).order_by(models.c.id)).scalars().all()
        raise LookupError(
            f"no model registered under key {key!r}; registered: {', '.join(known) or 'none'}"
        )
    # Two statements because PostgreSQL checks a non-deferrable unique index row by
    # row: flipping both rows in one UPDATE can transiently see two active rows.
    conn.execute(
        update(models).where(models.c.is_active, models.c.id != target).values(is_active=False)
    )
    conn.execute(
        update(models).where(models.c.id == target, ~models.c.is_active).values(is_active=True)
    )


def _model_rows(conn: Connection, where: ColumnElement[Any] | None = None) -> list[ModelRow]:
    n_embeddings = (
        select(func.count())
        .select_from(embeddings)
        .where(embeddings.c.model_id == models.c.id)
        .scalar_subquery()
    )
    stmt = select(
        models.c.id,
        models.c.key,
        models.c.name,
        models.c.version,
        models.c.embedding_dim,
        models.c.labels,
        models.c.path,
        models.c.is_active,
        models.c.created_at,
        n_embeddings.label("n_embeddings"),
    ).order_by(models.c.id)
    if where is not None:
        stmt = stmt.where(where)
    return [
        ModelRow(
            id=row.id,
            key=row.key,
            name=row.name,
            version=row.version,
            embedding_dim=row.embedding_dim,
            labels=tuple(row.labels),
            path=row.path,
            is_active=row.is_active,
            created_at=row.created_at,
            n_embeddings=int(row.n_embeddings),
        )
        for row in conn.execute(stmt)
    ]


def active_model(conn: Connection) -> ModelRow | None:
    """The active model, or None if none was activated yet."""
    rows = _model_rows(conn, models.c.is_active)
    return rows[0] if rows else None


def active_labels(conn: Connection) -> list[str]:
    """The active model's labels ([] with none active), without counting its embeddings
    as `active_model` does: the review desk reads them on every page."""
    labels = conn.execute(select(models.c.labels).where(models.c.is_active)).scalar_one_or_none()
    return [str(label) for label in labels or []]


def list_models(conn: Connection) -> list[ModelRow]:
    """All registered models, oldest first."""
    return _model_rows(conn)


def find_model(conn: Connection, *, key: str | None) -> ModelRow | None:
    """Resolve what a person typed into one model; None when nothing matches.

    None means the active model; `name@version` that exact model; a bare name the only
    model of that name -- several versions of it raise `LookupError` listing their keys,
    because guessing (newest? active?) would silently act on the wrong model.
    """
    if key is None:
        return active_model(conn)
    if "@" in key:
        rows = _model_rows(conn, models.c.key == key)
    else:
        rows = _model_rows(conn, models.c.name == key)
    if len(rows) > 1:
        raise LookupError(
            f"model name {key!r} is ambiguous; use one of: {', '.join(r.key for r in rows)}"
        )
    return rows[0] if rows else None


def model_count(conn: Connection) -> int:
    """How many models are registered (0 on a fresh database)."""
    return int(conn.execute(select(func.count()).select_from(models)).scalar_one())
