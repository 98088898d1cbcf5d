"""`vitrine models`: the registry of model versions, and switching between them."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from vitrine.db import repository
from vitrine.db.types import ModelRow
from vitrine.ops.errors import UserError
from vitrine.pipeline.inference.model import read_spec


def check_model_dir(model_dir: Path) -> None:
    """A clear error for a directory that is not a model, before any server is touched."""
    try:
        read_spec(model_dir)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    except (KeyError, ValueError) as exc:
        raise UserError(f"{model_dir}/model.json is not a vitrine model spec: {exc}") from None


def register_model_dir(engine: Engine, model_dir: Path, *, activate: bool = False) -> str:
    """Register (or refresh) the model in `model_dir`; activate it if asked or if none is."""
    check_model_dir(model_dir)
    spec = read_spec(model_dir)
    with engine.begin() as conn:
        try:
            repository.register_model(
                conn, spec=spec, path=str(Path(model_dir).resolve()), activate_if_none=True
            )
        except ValueError as exc:
            raise UserError(str(exc)) from None
        if activate:
            repository.activate_model(conn, key=spec.key)
    return spec.key


def list_models(engine: Engine) -> list[ModelRow]:
    with engine.connect() as conn:
        return repository.list_models(conn)


def find_model(engine: Engine, key: str | None) -> ModelRow:
    """The model `key` names (name@version or a unique name), or the active one for None."""
    with engine.connect() as conn:
        try:
            row = repository.find_model(conn, key=key)
        except LookupError as exc:
            raise UserError(str(exc)) from None
        if row is None:
            known = ", ".join(r.key for r in repository.list_models(conn)) or "none"
            what = f"unknown model {key!r}" if key else "no model is active"
            raise UserError(
                f"{what}; registered: {known} (register one with `vitrine models add DIR`)"
            )
    return row


def activate(engine: Engine, key: str) -> ModelRow:
    """Make the model `key` names the active one, atomically."""
    row = find_model(engine, key)
    with engine.begin() as conn:
        repository.activate_model(conn, key=row.key)
    return row
