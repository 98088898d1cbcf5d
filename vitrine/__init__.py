"""vitrine: product photos in, labels and vectors in PostgreSQL/pgvector out.

The one importable name of the distribution. Its rooms (docs/architecture.md) are the
repository's top-level folders, reached through links in this folder:

* `vitrine.pipeline`: pure logic (no Celery, no SQL): `types`, then `inference` (what a
  worker runs on a photo: decode to model), `training`, `synthetic` (photo generators)
  and `evaluation`;
* `vitrine.settings`: the one settings object, read once from the environment;
* `vitrine.sources`: the read path every stored byte goes through (source policy, fetch);
* `vitrine.db`: persistence (SQLAlchemy, Alembic migrations, pgvector);
* `vitrine.worker`: the Celery runtime;
* `vitrine.embedded`: the embedded PostgreSQL and Valkey servers;
* `vitrine.ops`: what the commands and the API do, written once for both;
* `vitrine.bench`: the benchmarks;
* `vitrine.cli` and `vitrine.api`: the front ends.
"""
