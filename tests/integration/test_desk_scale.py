"""The review desk's reads on a 10,000-image catalog: every page, first or deep, costs a
few milliseconds (keyset on the image id, no OFFSET), and pages join up without gaps or
repeats. No browser needed: these are the queries the pages run."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from vitrine.db import repository

pytestmark = pytest.mark.integration
N, MERCHANT = 10_000, "m-desk-scale"
#: Generous for a loaded 2-core machine (what each read took is printed, `-s`).
PAGE_BUDGET_S = 0.25


@pytest.fixture(scope="module")
def big_catalog(engine: Engine) -> Iterator[list[int]]:
    """N done images with active-model predictions (COPY, no photos), removed afterwards."""
    with engine.begin() as conn:
        active = repository.active_model(conn)
        assert active is not None
        labels = [active.labels[i % len(active.labels)] for i in range(N)]
        ids = repository.copy_catalog(
            conn,
            model_id=active.id,
            merchants=[MERCHANT] * N,
            labels=labels,
            label_indices=[i % len(active.labels) for i in range(N)],
            confidences=[0.3 + 0.7 * ((i * 37) % 100) / 100 for i in range(N)],
        )
    try:
        yield ids
    finally:
        with engine.begin() as conn:
            repository.delete_merchants(conn, merchant_ids=[MERCHANT])


def _timed(engine: Engine, read):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        read(conn)  # warm: plan and buffers
        started = time.perf_counter()
        rows = read(conn)
        spent = time.perf_counter() - started
        print(f"desk read: {spent * 1000:.1f} ms")  # shown with -s
        return rows, spent


def test_catalog_pages_are_keyset_fast_and_join_up(engine: Engine, big_catalog) -> None:  # type: ignore[no-untyped-def]
    seen: list[int] = []
    before = None
    for _ in range(3):
        page, spent = _timed(
            engine,
            lambda c, b=before: repository.browse(c, merchant_id=MERCHANT, before=b, limit=48),
        )
        assert spent < PAGE_BUDGET_S, spent
        seen += [r["image_id"] for r in page]
        before = page[-1]["image_id"]
    assert seen == sorted(big_catalog, reverse=True)[:144]
    deep, spent = _timed(
        engine,
        lambda c: repository.browse(
            c, merchant_id=MERCHANT, label="Bag", before=big_catalog[50], limit=48
        ),
    )
    assert spent < PAGE_BUDGET_S and len(deep) == 5 and {r["label"] for r in deep} == {"Bag"}


def test_queue_pages_are_keyset_fast(engine: Engine, big_catalog) -> None:  # type: ignore[no-untyped-def]
    middle = big_catalog[N // 2]
    for queue in ("low_confidence", "quality", "label_mismatches"):
        page, spent = _timed(
            engine,
            lambda c, q=queue: repository.queue_items(
                c, queue=q, merchant_id=MERCHANT, after=middle, limit=25, below=0.5
            ),
        )
        assert spent < PAGE_BUDGET_S, (queue, spent)
        if queue == "low_confidence":
            assert len(page) == 25 and all(r["confidence"] < 0.5 for r in page)
            assert page[0]["image_id"] > middle
    pairs, spent = _timed(  # near-duplicates are pairs, read from duplicate_pairs
        engine,
        lambda c: repository.duplicate_pairs(c, merchant_id=MERCHANT, after=(middle, 0), limit=25),
    )
    assert spent < PAGE_BUDGET_S and pairs == []  # COPY-made images have no hashes
    merchants, spent = _timed(engine, repository.merchants)
    assert MERCHANT in merchants and spent < PAGE_BUDGET_S
