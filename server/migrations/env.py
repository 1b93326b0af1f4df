"""Alembic environment: runs against the engine handed in by censusdrop."""

from __future__ import annotations

from alembic import context

from censusdrop.server.db import make_engine
from censusdrop.server.schema import metadata as server_metadata

target_metadata = [server_metadata]
try:
    from censusdrop.audit.schema import metadata as audit_metadata
except ImportError:  # pragma: no cover - the audit schema always ships
    pass
else:
    target_metadata.append(audit_metadata)


def run() -> None:
    config = context.config
    engine = config.attributes.get("engine")
    if engine is None:
        engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run()
