"""vitrine.pipeline.inference.allocator: glibc keeps one upload's freed buffers for the next one."""

from __future__ import annotations

import platform

import pytest

from vitrine.pipeline.inference import allocator
from vitrine.pipeline.inference.allocator import (
    M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD,
    MMAP_THRESHOLD,
    TRIM_THRESHOLD,
    keep_freed_memory,
)


class FakeLibc:
    def __init__(self, answer: int = 1) -> None:
        self.answer = answer
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.answer


def test_sets_both_thresholds() -> None:
    libc = FakeLibc()
    assert keep_freed_memory(libc=libc, environ={})
    assert libc.calls == [(M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD)]
    assert (M_TRIM_THRESHOLD, M_MMAP_THRESHOLD) == (-1, -3)  # glibc's malloc.h
    assert MMAP_THRESHOLD <= 32 * 1024 * 1024  # glibc's own dynamic ceiling on 64-bit


@pytest.mark.parametrize(
    "environ",
    [
        {"MALLOC_TRIM_THRESHOLD_": "131072"},
        {"MALLOC_MMAP_THRESHOLD_": "131072"},
        {"MALLOC_TOP_PAD_": "0"},
        {"MALLOC_MMAP_MAX_": "0"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"},
    ],
    ids=["trim", "mmap", "top_pad", "mmap_max", "tunables"],
)
def test_an_operators_glibc_settings_win(environ: dict[str, str]) -> None:
    libc = FakeLibc()
    assert not keep_freed_memory(libc=libc, environ=environ)
    assert libc.calls == []


def test_unrelated_tunables_do_not_count() -> None:
    libc = FakeLibc()
    assert keep_freed_memory(libc=libc, environ={"GLIBC_TUNABLES": "glibc.rtld.nns=2"})


def test_refused_value_is_reported() -> None:
    assert not keep_freed_memory(libc=FakeLibc(answer=0), environ={})


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_this_process_is_tuned_once(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in allocator.GLIBC_VARIABLES + ("GLIBC_TUNABLES",):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(allocator, "_outcome", None)
    assert keep_freed_memory() is True
    monkeypatch.setattr(allocator, "_glibc", lambda: pytest.fail("tuned twice"))
    assert keep_freed_memory() is True
