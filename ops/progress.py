"""How long work reports progress without knowing who watches.

Orchestration takes a `ProgressFactory`; the CLI passes one that draws a bar, tests and
library callers pass nothing (`no_progress`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

#: Called with how many more units are done.
Tick = Callable[[int], None]


class ProgressFactory(Protocol):
    def __call__(self, description: str, total: int) -> AbstractContextManager[Tick]: ...


@contextmanager
def no_progress(description: str, total: int) -> Iterator[Tick]:
    """A progress sink that shows nothing."""
    yield lambda advance: None
