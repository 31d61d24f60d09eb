"""Columns added to existing tables after a release: ``ALTER TABLE ... ADD COLUMN``.

``create_all`` makes missing tables but never changes an existing one, so a database
created by an earlier version lacks the columns added since (the run labels of
``jobs``). Each such column is nullable and has no default, so adding it is one cheap
catalogue change on SQLite and PostgreSQL alike, and old rows read as NULL.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, MetaData, inspect, text


def add_missing_columns(bind: Engine | Connection, metadata: MetaData) -> list[str]:
    """Add every nullable column of *metadata*'s tables that the database lacks.

    Returns ``TABLE.COLUMN`` of the columns added. A missing column that is not nullable
    is left alone (an old row would have no value for it): such a change needs a real
    migration, and the first query naming it fails loudly.
    """
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            return add_missing_columns(conn, metadata)
    added: list[str] = []
    inspector = inspect(bind)
    for table in metadata.sorted_tables:
        if not inspector.has_table(table.name):
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present or not column.nullable:
                continue
            kind = column.type.compile(dialect=bind.dialect)
            # Names come from our own models, never from a user.
            bind.execute(text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}'))
            added.append(f"{table.name}.{column.name}")
    return added
