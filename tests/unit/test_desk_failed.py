"""The review desk's failed uploads without a server: which failures may be sent again
(the one rule the worker's wording, Python and SQL share), the SQL that lists and resets
them, the forms' fields and the page itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi import HTTPException
from sqlalchemy.dialects import postgresql

from vitrine.api.desk import page
from vitrine.api.desk_failed import FAILED_PAGE, _back, _ids, _list_url, _refusal, _shown
from vitrine.api.desk_session import Session, form_token
from vitrine.db import repository
from vitrine.db.repository.failed import RESENDABLE, FailedCount
from vitrine.db.types import ApiClient
from vitrine.pipeline.inference.batch import failure_reason
from vitrine.pipeline.types import GAVE_UP_PREFIX, worth_resending
from vitrine.settings import Settings
from vitrine.sources.fetch import PermanentError, RefusedSource, TransientError
from vitrine.worker.failures import RetryPolicy, classify
from vitrine.worker.processing import _gave_up

EVIL = '<script>alert("x")</script>'


def _sql(statement: Any) -> str:
    """The statement's SQL with its values in it (and `%` as typed, not as the driver's
    paramstyle doubles it)."""
    compiled = statement.compile(
        dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
    )
    return str(compiled).replace("%%", "%")


class _Recorder:
    """A Connection that keeps what it was asked to run and finds nothing."""

    def __init__(self) -> None:
        self.statements: list[Any] = []

    def execute(self, statement: Any, *_: Any) -> _Recorder:
        self.statements.append(statement)
        return self

    def mappings(self) -> list[Any]:
        return []

    def __iter__(self) -> Any:
        return iter([])


def test_what_the_worker_records_after_its_tries_is_worth_sending_again() -> None:
    """Both ways a worker gives up (retries spent on a source's passing trouble; claimed
    too often without a result) start with the one shared prefix."""
    timed_out = classify(TransientError("HTTP 503 fetching http://shop/p.jpg"))
    assert timed_out.transient
    retried = RetryPolicy.gave_up(2, timed_out.reason)
    assert retried == "gave up after 3 tries: HTTP 503 fetching http://shop/p.jpg"
    claimed = _gave_up(5, None)
    for reason in (retried, claimed, _gave_up(5, "worker killed")):
        assert reason.startswith(GAVE_UP_PREFIX) and worth_resending(reason), reason


@pytest.mark.parametrize(
    "reason",
    [
        None,
        "",
        classify(PermanentError("HTTP 404 fetching http://shop/p.jpg")).reason,
        classify(RefusedSource("refused to fetch http://10.0.0.1/p.jpg: private address")).reason,
        failure_reason(ValueError("odd")),
        "not an image (cannot identify image file)",
        "processing took longer than 60s",
        # a transient reason as the source words it is not what the worker records
        "gave up fetching http://shop/p.jpg: not done within 10 s (VITRINE_FETCH_TIMEOUT_S)",
        # the words anywhere but at the start say nothing
        "HTTP 404 fetching http://shop/gave up after 3 tries: x.jpg",
        "Gave up after 3 tries: 503",
    ],
)
def test_a_failure_of_the_photos_own_is_not(reason: str | None) -> None:
    assert not worth_resending(reason)


def test_the_sql_rule_is_the_python_rule() -> None:
    """error LIKE '<prefix>%', the prefix matched as itself, whatever characters it has."""
    sql = _sql(RESENDABLE)
    assert sql == "images.error LIKE 'gave up after ' || '%' ESCAPE '/'"
    assert "ESCAPE '/'" in sql
    assert GAVE_UP_PREFIX == "gave up after "


def test_the_list_is_a_keyset_page_of_failed_uploads_newest_first() -> None:
    conn = _Recorder()
    assert repository.failed_uploads(conn, before=500, limit=51) == []  # type: ignore[arg-type]
    assert repository.failed_uploads(conn, merchant_id="m-1", limit=51) == []  # type: ignore[arg-type]
    paged, filtered = (_sql(s) for s in conn.statements)
    assert "WHERE images.status = 'failed'" in paged and "images.id < 500" in paged
    assert "ORDER BY images.id DESC" in paged and "LIMIT 51" in paged
    assert "OFFSET" not in paged
    assert "images.merchant_id = 'm-1'" in filtered and "images.id <" not in filtered
    assert "coalesce((images.error LIKE 'gave up after '" in paged


def test_a_reset_guards_locks_in_order_and_clears_as_a_redelivery_does() -> None:
    conn = _Recorder()
    assert repository.reset_failed(conn, image_ids=[]) == []  # type: ignore[arg-type]
    assert conn.statements == []  # nothing asked, nothing sent
    assert repository.reset_failed(conn, image_ids=[3, 1]) == []  # type: ignore[arg-type]
    (sql,) = (_sql(s) for s in conn.statements)
    assert sql.startswith("UPDATE images SET status='pending', error=NULL, attempts=0")
    assert "updated_at=now()" in sql
    assert "ORDER BY images.id" in sql and "FOR UPDATE" in sql
    assert sql.count("images.status = 'failed'") == 2  # chosen and written under the guard
    assert "images.error LIKE 'gave up after '" in sql
    assert "RETURNING images.id, images.uri, images.merchant_id" in sql


def test_only_visible_ids_are_asked_about() -> None:
    conn = _Recorder()
    assert repository.resendable(conn, image_ids=[]) == {}  # type: ignore[arg-type]
    assert repository.resendable(conn, image_ids=[7]) == {}  # type: ignore[arg-type]
    (sql,) = (_sql(s) for s in conn.statements)
    assert "images.id = ANY (CAST(ARRAY[7] AS BIGINT[]))" in sql


def test_a_pages_ids_are_whole_numbers_at_most_a_page_of_them() -> None:
    assert _ids(" 12 11  12\n10 ") == [12, 11, 10]
    for bad in ("", "  ", "x", "0", "-1", "1.5", "²", "9" * 30, str(2**63)):
        with pytest.raises(HTTPException) as refused:
            _ids(bad)
        assert refused.value.status_code == 422, bad
    assert len(_ids(" ".join(str(i) for i in range(1, FAILED_PAGE + 1)))) == FAILED_PAGE
    with pytest.raises(HTTPException):
        _ids(" ".join(str(i) for i in range(1, FAILED_PAGE + 2)))


def test_going_back_keeps_the_page_and_drops_what_is_odd() -> None:
    assert _back({"merchant": " m-1 ", "before": "40"}) == ("m-1", 40)
    assert _back({"merchant": "", "before": "x"}) == (None, None)
    assert _back({"before": "9" * 40}) == (None, None)
    assert _back({"merchant": "m" * 500})[0] == "m" * 200


def test_after_a_resend_the_list_says_how_many() -> None:
    assert _list_url(None, None, 3) == "/desk/failed?resent=3"
    assert _list_url("m 1&x", 40, 1) == "/desk/failed?merchant=m+1%26x&before=40&resent=1"


def test_a_refusal_says_why() -> None:
    assert "sent again meanwhile" in _refusal(4, "failed", raced=True)
    assert "is done, not failed" in _refusal(4, "done", raced=False)
    assert "would fail the same way" in _refusal(4, "failed", raced=False)


def test_rows_show_no_server_paths_and_utc_times(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", file_roots=[tmp_path / "shop"])
    stored = settings.uploads / "api" / "3f0b" / "ab" / "photo"
    when = datetime(2026, 3, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    row = {
        "image_id": 9,
        "uri": stored.as_uri(),
        "error": f"gave up after 2 tries: could not fetch {stored}",
        "failed_at": when,
        "resendable": True,
    }
    shown = _shown(settings, row)
    assert shown["uri"] == "upload:api/3f0b/ab/photo"
    assert str(tmp_path) not in shown["error"] and "upload:api/3f0b/ab/photo" in shown["error"]
    assert shown["failed_at"] == when and shown["failed_at"].tzinfo == UTC


def _session() -> Session:
    client = ApiClient(1, EVIL, None, datetime.now(UTC), None)
    return Session(client, form_token("session-id"), b"\0" * 32)


def _render(items: list[dict[str, Any]], **values: Any) -> str:
    menus: dict[str, Any] = {
        "merchants": [EVIL],
        "labels": [],
        "open_queues": [],
        "counts": {},
        "last": None,
    }
    settled = {
        "more": True,
        "count": FailedCount(total=120, resendable=7),
        "merchant": EVIL,
        "before": 500,
        "resent": None,
        "error": None,
        "resend_ids": " ".join(str(it["image_id"]) for it in items if it["resendable"]),
    }
    answer = page("failed.html", _session(), items=items, **{**menus, **settled, **values})
    return bytes(answer.body).decode()


def _row(image_id: int, resendable: bool, **more: Any) -> dict[str, Any]:
    when = datetime(2026, 3, 1, 12, 5, tzinfo=UTC)
    reason = "gave up after 6 tries: HTTP 503" if resendable else "not an image"
    return {
        "image_id": image_id,
        "merchant_id": "m-1",
        "sku": None,
        "uri": "https://shop.example/p.jpg",
        "failed_at": when,
        "attempts": 6,
        "error": reason,
        "resendable": resendable,
        **more,
    }


def test_the_page_escapes_everything_and_offers_resend_for_passing_trouble_only() -> None:
    token = form_token("session-id")
    html = _render(
        [
            _row(12, True, merchant_id=EVIL, sku=EVIL, uri=EVIL),
            _row(11, False, error=EVIL),
            _row(10, True),
        ],
        error=EVIL,
    )
    assert EVIL not in html and "&lt;script&gt;" in html
    assert 'id="failed-count">120<' in html and "7 failed on passing trouble" in html
    assert 'action="/desk/failed/12/resend"' in html and 'action="/desk/failed/10/resend"' in html
    assert 'action="/desk/failed/11/resend"' not in html  # its failure would happen again
    row_11 = html.split('id="failed-11"')[1].split("</tr>")[0]
    assert "would fail again" in row_11 and 'class="resend"' not in row_11
    assert 'name="ids" value="12 10"' in html and 'id="resend-all"' in html
    assert html.count(f'name="form_token" value="{token}"') >= 3
    assert 'href="/desk/items/12">#12</a>' in html and "2026-03-01 12:05 UTC" in html
    assert "before=10" in html  # the next page starts below the last row shown


def test_the_page_says_what_was_sent_and_what_is_empty() -> None:
    assert "3 uploads sent again" in _render([], resent=3)
    assert "1 upload sent again" in _render([], resent=1)
    empty = _render([], more=False)
    assert 'id="empty"' in empty and 'id="resend-all"' not in empty and 'id="next"' not in empty
    permanent_only = _render([_row(5, False)], more=False)
    assert 'id="resend-all"' not in permanent_only
