"""What benchmarks read and clean up: the database's clock and when rows were committed.

Throughput and latency are measured on the database's own clock (`processed_at` is set
by the committing transaction), so "first publish to last row committed" needs no
polling precision on the client side.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, delete, func, select

from vitrine.db.schema import images


def database_clock(conn: Connection) -> float:
    """The database's wall clock now, as a Unix timestamp (not the transaction's start)."""
    return float(conn.execute(select(func.extract("epoch", func.clock_timestamp()))).scalar_one())


def settled_counts(conn: Connection, *, merchant_id: str) -> tuple[int, int]:
    """`(finished, total)` rows of one merchant: finished means `done` or `failed`."""
    finished = func.count().filter(images.c.status.in_(("done", "failed")))
    row = conn.execute(
        select(finished, func.count()).where(images.c.merchant_id == merchant_id)
    ).one()
    return int(row[0]), int(row[1])


def commit_times(conn: Connection, *, merchant_id: str) -> dict[str, float]:
    """`{uri: processed_at}` (Unix time) of one merchant's finished rows."""
    stmt = select(images.c.uri, func.extract("epoch", images.c.processed_at)).where(
        images.c.merchant_id == merchant_id, images.c.processed_at.is_not(None)
    )
    return {uri: float(at) for uri, at in conn.execute(stmt)}


def delete_merchants(conn: Connection, *, merchant_ids: Sequence[str]) -> int:
    """Remove every image (and, by cascade, its predictions and embeddings) of these
    merchants; the number of images removed. For benchmarks' own throw-away rows."""
    result = conn.execute(delete(images).where(images.c.merchant_id.in_(list(merchant_ids))))
    return int(result.rowcount or 0)
