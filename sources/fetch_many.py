"""Fetching a batch's uploads at once, so no single source can hold the batch hostage.

A task fetches a whole batch before its one forward pass. Fetched one after another, a
batch waits for the sum of its sources, and one stalled merchant server (or one that
trickles bytes) delays every other image and can push the task past its time limit, so
the whole batch is retried, not just the slow image. Here:

* fetches run side by side on threads (the work is waiting on sockets, not CPU), at most
  `max_workers` at once and at most `per_host` to one host:port, so one merchant's 64
  uploads cannot take every slot and no server sees more than `per_host` connections;
* each image has its own deadline from the moment its fetch starts (`fetch_bytes` bounds
  every read by what is left of it); a slow image fails alone with TransientError and is
  retried later while the rest of the batch goes on;
* an optional batch deadline caps the whole call: what has not started by then fails at
  once (TransientError, nothing requested) and what runs is cut off at it, so the caller
  can keep fetching well inside the task's soft time limit;
* should a fetch overrun its deadline anyway (a DNS lookup, which no socket timeout
  bounds), the batch stops waiting for it `_GRACE_S` later and records a TransientError;
  the thread is left to finish on its own and its late answer is dropped.

Results keep each URI's exception exactly as `fetch_bytes` raised it, so callers sort
PermanentError / RefusedSource / TransientError as they do for a single fetch.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Sequence
from urllib.parse import urlsplit

from vitrine.sources.fetch import TransientError, fetch_bytes
from vitrine.sources.policy import SourcePolicy

__all__ = ["fetch_all"]

#: How long past an image's deadline the batch still waits for its thread to answer.
_GRACE_S = 1.0

_Result = bytes | Exception


def fetch_all(
    uris: Sequence[str],
    policy: SourcePolicy,
    *,
    max_workers: int,
    per_host: int,
    deadline_s: float | None = None,
    batch_deadline_s: float | None = None,
) -> dict[str, _Result]:
    """Every distinct URI of `uris` -> its bytes or the exception fetching it raised.

    `deadline_s` bounds each image from the start of its own fetch (default
    `policy.timeout`); `batch_deadline_s`, when given, bounds the whole call. Duplicates
    are fetched once. Keys come back in the order of first appearance in `uris`.
    """
    if max_workers < 1 or per_host < 1:
        raise ValueError(f"max_workers and per_host must be >= 1, not {max_workers}, {per_host}")
    each = policy.timeout if deadline_s is None else deadline_s
    started = time.monotonic()
    batch_end = None if batch_deadline_s is None else started + batch_deadline_s
    order = list(dict.fromkeys(uris))
    results: dict[str, _Result] = {}
    waiting = list(order)
    running: dict[str, tuple[float, float, str | None]] = {}  # uri -> give up at, budget, host
    busy: Counter[str] = Counter()
    answers: queue.SimpleQueue[tuple[str, _Result]] = queue.SimpleQueue()

    while waiting or running:
        still: list[str] = []
        for uri in waiting:
            host = _host_key(uri)
            if len(running) >= max_workers or (host is not None and busy[host] >= per_host):
                still.append(uri)
                continue
            now = time.monotonic()
            budget = each if batch_end is None else min(each, batch_end - now)
            if budget <= 0:
                results[uri] = _not_started(uri, batch_deadline_s)
                continue
            running[uri] = (now + budget + _GRACE_S, budget, host)
            if host is not None:
                busy[host] += 1
            threading.Thread(
                target=_fetch_one,
                args=(uri, policy, budget, answers),
                name="vitrine-fetch",
                daemon=True,
            ).start()
        waiting = still
        if not running:
            continue
        give_up = min(limit for limit, _, _ in running.values())
        try:
            uri, result = answers.get(timeout=max(0.0, give_up - time.monotonic()))
        except queue.Empty:
            now = time.monotonic()
            late = [u for u, (limit, _, _) in running.items() if limit <= now]
            for uri in late:
                results[uri] = TransientError(
                    f"gave up fetching {uri}: no answer within {running[uri][1]:g} s "
                    "(VITRINE_FETCH_TIMEOUT_S); its lookup or connection hung"
                )
                _release(uri, running, busy)
            continue
        if uri in running:  # else it was given up on, and its late answer is dropped
            results[uri] = result
            _release(uri, running, busy)
    return {uri: results[uri] for uri in order}


def _fetch_one(
    uri: str, policy: SourcePolicy, budget: float, answers: queue.SimpleQueue[tuple[str, _Result]]
) -> None:
    """One fetch on its own thread; whatever it raises is the answer, never lost."""
    try:
        result: _Result = fetch_bytes(uri, policy, deadline_s=budget)
    except Exception as exc:  # kept per URI, as prepare_batch keeps per-item errors
        result = exc
    answers.put((uri, result))


def _release(
    uri: str, running: dict[str, tuple[float, float, str | None]], busy: Counter[str]
) -> None:
    _, _, host = running.pop(uri)
    if host is not None:
        busy[host] -= 1


def _host_key(uri: str) -> str | None:
    """`host:port` of an http(s) URI, the unit the per-host limit counts; None for local
    files and anything else `fetch_bytes` settles without a connection."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        return None
    return f"{parts.hostname}:{port}"


def _not_started(uri: str, batch_deadline_s: float | None) -> TransientError:
    return TransientError(
        f"did not fetch {uri}: the batch's {batch_deadline_s:g} s for fetching ran out "
        "before its turn (VITRINE_FETCH_BATCH_DEADLINE_S); it is retried later"
    )
