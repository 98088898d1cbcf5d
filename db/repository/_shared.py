"""Helpers more than one repository module needs; private to `vitrine.db.repository`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    FromClause,
    ScalarSelect,
    any_,
    case,
    cast,
    func,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY

from vitrine.db.schema import models
from vitrine.pipeline.types import UNKNOWN_LABEL

#: The label of a prediction flagged "none of our categories" (migration 0014).
UNKNOWN = UNKNOWN_LABEL


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


def effective_label(image: FromClause, prediction: FromClause) -> ColumnElement[Any]:
    """The label people and SQL read (migration 0014): a person's latest decision, else
    'unknown' for a prediction flagged unknown, else the model's label."""
    model = case((prediction.c.unknown.is_(True), literal(UNKNOWN)), else_=prediction.c.label)
    return func.coalesce(image.c.person_label, model)


def label_source(image: FromClause, prediction: FromClause) -> ColumnElement[Any]:
    """'person', 'model', or NULL while there is no label at all."""
    return case(
        (image.c.person_label.is_not(None), literal("person")),
        (prediction.c.label.is_not(None), literal("model")),
        else_=None,
    )


#: The same two, as SQL text over aliases `i` (images) and `p` (predictions), for the
#: text queries of the desk.
EFFECTIVE = f"coalesce(i.person_label, CASE WHEN p.unknown THEN '{UNKNOWN}' ELSE p.label END)"
SOURCE = (
    "CASE WHEN i.person_label IS NOT NULL THEN 'person' WHEN p.label IS NOT NULL THEN 'model' END"
)
