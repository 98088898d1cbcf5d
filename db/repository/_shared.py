"""Helpers more than one repository module needs; private to `db.repository`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, ScalarSelect, any_, cast, literal, select
from sqlalchemy.dialects.postgresql import ARRAY

from db.schema import models


def active_model_id() -> ScalarSelect[Any]:
    """`(SELECT id FROM models WHERE is_active)` as a scalar subquery.

    Reads that answer "under the active model" embed this instead of looking the id up
    first: one round trip, and the answer cannot straddle a concurrent `activate_model`.
    With no active model it is NULL, so every comparison with it matches no row.
    """
    return select(models.c.id).where(models.c.is_active).scalar_subquery()


def id_in(column: ColumnElement[Any], ids: Iterable[int]) -> ColumnElement[bool]:
    """`column = ANY(CAST(:ids AS bigint[]))`: one array parameter for any number of ids.

    `column.in_(ids)` would send one bind parameter per id, and a CLI looking up a whole
    ingest (100k ids) would run into the protocol's 65535-parameter limit.
    """
    array = literal([int(i) for i in ids], ARRAY(BigInteger))
    return column == any_(cast(array, ARRAY(BigInteger)))
