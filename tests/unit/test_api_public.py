"""What the API shows of paths, what its access log keeps, how it counts callers."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi import HTTPException

from vitrine.api.public import public_text, public_uri
from vitrine.api.rate_limits import RateLimits
from vitrine.api.server import RedactQuery, log_config, redacted
from vitrine.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", file_roots=[tmp_path / "shop-photos"])


def test_uris_never_name_the_servers_directories(settings: Settings, tmp_path: Path) -> None:
    stored = settings.uploads / "api" / "3f0b" / "ab" / ("ab" * 32)
    assert public_uri(settings, stored.as_uri()) == f"upload:api/3f0b/ab/{'ab' * 32}"
    root_file = tmp_path / "shop-photos" / "2026" / "shirt.jpg"
    assert public_uri(settings, root_file.as_uri()) == "local:shirt.jpg"
    assert public_uri(settings, str(root_file)) == "local:shirt.jpg"
    assert public_uri(settings, "https://cdn.example.com/p/1.jpg?v=2") == (
        "https://cdn.example.com/p/1.jpg?v=2"
    )
    # a URL's password is the client's secret, not something to echo to every reader
    assert public_uri(settings, "https://u:pw@cdn.example.com:8443/p.jpg") == (
        "https://cdn.example.com:8443/p.jpg"
    )


def test_error_texts_are_rewritten_the_same_way(settings: Settings, tmp_path: Path) -> None:
    data = str(settings.data_dir)
    missing = settings.uploads / "api" / "gone.png"
    assert (
        public_text(settings, f"file not found: {missing}") == "file not found: upload:api/gone.png"
    )
    assert public_text(settings, f"bad: file://{missing}") == "bad: upload:api/gone.png"
    text = public_text(settings, f"cannot write {data}/desk-thumbs/x and {tmp_path}/shop-photos/y")
    assert text == "cannot write <data dir>/desk-thumbs/x and <file root>/y"
    assert data not in (public_text(settings, f"in {data}") or "")
    assert public_text(settings, None) is None


def test_access_log_keeps_query_names_never_values() -> None:
    assert redacted("/desk?token=vt_secret&k=3") == "/desk?token=…&k=…"
    assert redacted("/v1/images/3") == "/v1/images/3"
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', None, None
    )
    record.args = ("127.0.0.1:5000", "GET", "/healthz?token=vt_secret", "1.1", 200)
    assert RedactQuery().filter(record) and "vt_secret" not in record.getMessage()
    config = log_config()
    assert config["handlers"]["access"]["filters"] == ["redact_query"]


def test_rate_limits_refuse_with_retry_after_and_count_no_refusal() -> None:
    limits = RateLimits(
        Settings(
            api_upload_rate="2/minute;5/hour", api_search_rate="off", desk_login_rate="1/second"
        )
    )
    limits.hit("uploads", "client-1")
    limits.hit("uploads", "client-1")
    with pytest.raises(HTTPException) as refused:
        limits.hit("uploads", "client-1")
    assert refused.value.status_code == 429
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
    limits.hit("uploads", "client-2")  # per caller
    for _ in range(50):
        limits.hit("searches", "client-1")  # off
    with pytest.raises(ValueError, match="not a rate limit"):
        Settings(api_upload_rate="lots")
