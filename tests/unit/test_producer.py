"""vitrine_producer, the TensorFlow-free producer: its wire names, imports, message, errors.

The package lives in producer/src and is its own distribution; when it is not installed
in this environment (`pip install -e ./producer`), its source directory is put on the path.
"""

from __future__ import annotations

import ast
import base64
import json
import socket
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCER = REPO / "producer"
PACKAGE = PRODUCER / "src" / "vitrine_producer"
if str(PACKAGE.parent) not in sys.path:
    sys.path.insert(0, str(PACKAGE.parent))

import vitrine_producer  # noqa: E402
from vitrine_producer import (  # noqa: E402
    BrokerUnavailableError,
    InvalidUpload,
    Producer,
    ProducerConfigError,
    UploadEvent,
    build_message,
    submit_many,
    submit_upload,
)
from vitrine_producer.cli import main as cli_main  # noqa: E402

#: The top-level packages of the vitrine distribution, which pull in TensorFlow/Celery.
VITRINE_PACKAGES = {"pipeline", "db", "worker", "ops", "cli", "embedded", "api"}


@pytest.fixture
def no_broker_contact(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to build a connection pool (and so reach or start a broker) fails."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the producer tried to reach a broker")

    monkeypatch.setattr("redis.ConnectionPool.from_url", refuse)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port with nothing listening (bound, so no one else takes it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# -- (a) wire names ---------------------------------------------------------------------


def test_wire_names_equal_the_workers() -> None:
    from vitrine.worker import names

    assert vitrine_producer.INGEST_TASK == names.INGEST_TASK == "vitrine.ingest"
    assert vitrine_producer.UPLOADS_QUEUE == names.UPLOADS_QUEUE == "uploads"
    assert vitrine_producer.REVIEW_TASK == names.REVIEW_TASK == "vitrine.review"


# -- (b) what the package may import ----------------------------------------------------


def _imported_top_levels(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_package_imports_only_stdlib_and_redis() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert {p.name for p in sources} >= {"__init__.py", "client.py", "message.py"}
    allowed = set(sys.stdlib_module_names) | {"redis", "vitrine_producer"}
    for path in sources:
        imported = _imported_top_levels(path)
        assert not imported & VITRINE_PACKAGES, (path.name, imported & VITRINE_PACKAGES)
        assert imported <= allowed, (path.name, imported - allowed)


def test_distribution_depends_on_redis_only() -> None:
    project = tomllib.loads((PRODUCER / "pyproject.toml").read_text())["project"]
    assert project["name"] == "vitrine-producer" and project["version"] == "0.1.0"
    assert project["requires-python"] == ">=3.11"
    assert project["dependencies"] == ["redis>=5"]
    assert vitrine_producer.__version__ == project["version"]


# -- (c) the message --------------------------------------------------------------------


def _decode(raw: str) -> tuple[dict, list]:  # type: ignore[type-arg]
    envelope = json.loads(raw)
    assert envelope["properties"]["body_encoding"] == "base64"
    return envelope, json.loads(base64.b64decode(envelope["body"]))


def test_declared_labels_and_reviews_are_their_own_messages() -> None:
    """0009: `declared_label` rides on the upload only when given; a review is a
    `vitrine.review` message on the same queue."""
    plain = _decode(build_message(UploadEvent("https://c/1.jpg", "m-1"))[1])[1][1]
    assert "declared_label" not in plain
    declared = UploadEvent("https://c/1.jpg", "m-1", declared_label="Dress")
    assert _decode(build_message(declared)[1])[1][1]["declared_label"] == "Dress"
    review = vitrine_producer.ReviewEvent("https://c/r.jpg", "m-1", "SKU-1", "rev-9")
    envelope, (_, kwargs, _) = _decode(build_message(review)[1])
    assert envelope["headers"]["task"] == "vitrine.review"
    assert kwargs == {
        "uri": "https://c/r.jpg",
        "merchant_id": "m-1",
        "sku": "SKU-1",
        "review_ref": "rev-9",
    }
    with pytest.raises(InvalidUpload, match="sku"):
        vitrine_producer.ReviewEvent("https://c/r.jpg", "m-1", "")  # a review names a listing
    with pytest.raises(InvalidUpload, match="declared_label"):
        UploadEvent("https://c/1.jpg", "m-1", declared_label=" ")


def test_message_is_the_documented_protocol_2_message() -> None:
    event = UploadEvent("https://cdn.example.com/p/123.jpg", merchant_id="m-42", sku="SKU-123")
    task_id, raw = build_message(event, queue="uploads")
    envelope, body = _decode(raw)

    assert body == [
        [],
        {"uri": "https://cdn.example.com/p/123.jpg", "merchant_id": "m-42", "sku": "SKU-123"},
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    ]
    assert envelope["content-encoding"] == "utf-8"
    assert envelope["content-type"] == "application/json"
    headers, props = envelope["headers"], envelope["properties"]
    assert headers["lang"] == "py" and headers["task"] == "vitrine.ingest"
    assert headers["id"] == headers["root_id"] == props["correlation_id"] == task_id
    assert props["delivery_info"] == {"exchange": "", "routing_key": "uploads"}
    assert props["delivery_tag"] and props["delivery_tag"] != task_id
    assert headers["retries"] == 0 and headers["timelimit"] == [None, None]

    other_id, other = build_message(UploadEvent("u", "m"), queue="uploads-eu")
    assert other_id != task_id
    other_env, other_body = _decode(other)
    assert other_env["properties"]["delivery_info"]["routing_key"] == "uploads-eu"
    assert other_body[1] == {"uri": "u", "merchant_id": "m", "sku": None}


def test_message_matches_what_celery_sends() -> None:
    """Celery's own send_task (in-memory transport, no network) and build_message agree on
    the body and on every header and property the producer fills in."""
    from celery import Celery

    kwargs = {"uri": "file:///srv/p/1.jpg", "merchant_id": "m-1", "sku": None}
    probe = Celery("producer-probe", broker="memory://", backend=None)
    probe.send_task("vitrine.ingest", kwargs=kwargs, queue="uploads")
    with probe.connection_for_write() as conn:
        theirs = conn.default_channel._get("uploads")
    ours_env, ours_body = _decode(build_message(UploadEvent("file:///srv/p/1.jpg", "m-1"))[1])
    _, their_body = _decode(json.dumps(theirs))

    assert ours_body == their_body
    for key in ("content-encoding", "content-type"):
        assert ours_env[key] == theirs[key]
    variable = {"id", "root_id", "origin", "correlation_id", "delivery_tag"}
    for part in ("headers", "properties"):
        assert set(ours_env[part]) <= set(theirs[part]), part
        for key, value in ours_env[part].items():
            if key not in variable:
                assert value == theirs[part][key], (part, key)


# -- (d) errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "starts"),
    [
        ({"uri": "", "merchant_id": "m"}, "uri must be a non-empty string"),
        ({"uri": "   ", "merchant_id": "m"}, "uri must be a non-empty string"),
        ({"uri": b"https://x/1.jpg", "merchant_id": "m"}, "uri must be a non-empty string"),
        ({"uri": "https://x/1.jpg", "merchant_id": ""}, "merchant_id must be a non-empty string"),
        ({"uri": "https://x/1.jpg", "merchant_id": 42}, "merchant_id must be a non-empty string"),
        ({"uri": "https://x/1.jpg", "merchant_id": "m", "sku": ""}, "sku must be a non-empty"),
        ({"uri": "https://x/1.jpg", "merchant_id": "m", "sku": 7}, "sku must be a non-empty"),
        ({"uri": "https://x/1.jpg", "merchant_id": "m", "queue": ""}, "queue must be a non-emp"),
    ],
)
def test_bad_input_is_one_line_value_error(
    kwargs: dict, starts: str, no_broker_contact: None, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[type-arg]
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    with pytest.raises(ValueError) as info:
        submit_upload(**kwargs)
    assert isinstance(info.value, InvalidUpload)
    message = str(info.value)
    assert message.startswith(starts) and "\n" not in message


def test_bad_input_quotes_long_values_on_one_short_line(no_broker_contact: None) -> None:
    with pytest.raises(InvalidUpload) as info:
        submit_upload("https://x/1.jpg", merchant_id="\n" * 500, redis_url="redis://x")
    assert "\n" not in str(info.value) and len(str(info.value)) < 200


def test_bad_item_in_a_batch_is_named_and_nothing_is_sent(no_broker_contact: None) -> None:
    ok = {"uri": "https://x/1.jpg", "merchant_id": "m"}
    with pytest.raises(InvalidUpload, match=r"^upload #1: merchant_id must be"):
        submit_many([ok, {"uri": "https://x/2.jpg"}], redis_url="redis://x")
    with pytest.raises(InvalidUpload, match=r"^upload #0: unknown field\(s\) skew"):
        submit_many([{**ok, "skew": "S"}], redis_url="redis://x")
    with pytest.raises(InvalidUpload, match=r"^upload #0: expected an UploadEvent or a mapping"):
        submit_many(["https://x/1.jpg"], redis_url="redis://x")  # type: ignore[list-item]


def test_missing_redis_url_is_a_clear_error_and_starts_nothing(
    no_broker_contact: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    expected = "no broker: set REDIS_URL (e.g. redis://redis:6379/0)"
    with pytest.raises(ProducerConfigError) as info:
        submit_upload("https://x/1.jpg", merchant_id="m")
    assert str(info.value) == expected
    monkeypatch.setenv("REDIS_URL", "  ")
    with pytest.raises(ProducerConfigError, match="^no broker: set REDIS_URL"):
        Producer()
    with pytest.raises(ProducerConfigError, match="^no broker: set REDIS_URL"):
        submit_many([{"uri": "https://x/1.jpg", "merchant_id": "m"}])


def test_not_a_redis_url_is_a_config_error_without_the_password() -> None:
    with pytest.raises(ProducerConfigError) as info:
        Producer("http://user:s3cret@broker:6379/0")
    assert "not a Redis URL" in str(info.value) and "s3cret" not in str(info.value)


def test_unreachable_broker_names_host_port_never_the_password(closed_port: int) -> None:
    url = f"redis://user:s3cret@127.0.0.1:{closed_port}/0"
    with pytest.raises(BrokerUnavailableError) as info:
        submit_upload("https://x/1.jpg", merchant_id="m", redis_url=url)
    message = str(info.value)
    assert f"127.0.0.1:{closed_port}" in message, message
    assert "s3cret" not in message and "\n" not in message
    assert isinstance(info.value, ConnectionError)
    with Producer(url) as producer:
        assert "s3cret" not in repr(producer)
        with pytest.raises(BrokerUnavailableError):
            producer.submit_many([UploadEvent("https://x/1.jpg", "m")])


# -- the optional CLI -------------------------------------------------------------------


def test_cli_bad_input_and_missing_broker_exit_2_with_one_line(
    no_broker_contact: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert cli_main(["https://x/1.jpg", "--merchant", "m"]) == 2
    err = capsys.readouterr().err
    assert (
        err == "python -m vitrine_producer: no broker: set REDIS_URL (e.g. redis://redis:6379/0)\n"
    )

    assert cli_main(["", "--merchant", "m", "--redis-url", "redis://x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "uri must be a non-empty string" in err

    with pytest.raises(SystemExit) as info:
        cli_main(["https://x/1.jpg"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--merchant" in err


def test_cli_unreachable_broker_exits_3(
    closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"redis://:s3cret@127.0.0.1:{closed_port}/0"
    assert cli_main(["https://x/1.jpg", "--merchant", "m", "--redis-url", url]) == 3
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert f"127.0.0.1:{closed_port}" in captured.err and "s3cret" not in captured.err
