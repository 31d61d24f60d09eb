"""Database tables of the job service (SQLAlchemy 2 declarative models) and the engine.

Times are UNIX seconds (floats): portable between SQLite and PostgreSQL and free of
time-zone ambiguity. Every job row carries a ``version`` that each transition increments;
updates are compare-and-set on it, so two writers can never both apply a transition.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Engine,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mlaas4hep.errors import SpecError
from mlaas4hep.jobs.migrate import add_missing_columns

#: Advisory lock id serialising table creation on PostgreSQL (any constant: "mlaas4" in ASCII).
_DDL_LOCK_KEY = 0x6D6C61617334


class Base(DeclarativeBase):
    """Declarative base of the service's tables."""


class JobRow(Base):
    """One submitted job and the state of its current attempt."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency"),
        Index("ix_jobs_state_created", "state", "created_at"),
        Index("ix_jobs_owner_created", "owner", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(512))
    name: Mapped[str] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer, default=1)
    spec: Mapped[str] = mapped_column(Text)
    request_hash: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    needs_network: Mapped[bool] = mapped_column(Boolean, default=False)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(256), nullable=True)
    lease_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    pgid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    progress: Mapped[str | None] = mapped_column(Text, nullable=True)
    result_dir: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Run labels (docs/ui.md, "Runs"); added after release: nullable, see jobs/migrate.py.
    run_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    tags: Mapped[str | None] = mapped_column(Text, nullable=True)  # a JSON object
    parent: Mapped[str | None] = mapped_column(String(32), nullable=True)


class DatasetRow(Base):
    """One uploaded input file, private to its owner."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_datasets_owner_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(512), index=True)
    name: Mapped[str] = mapped_column(String(256))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)


def make_engine(url: str) -> Engine:
    """Create the engine for *url* and the tables if missing.

    SQLite gets WAL, a busy timeout and ``synchronous=NORMAL`` (durable in WAL mode across
    process crashes, which is what a job service needs); PostgreSQL needs ``psycopg``.

    Raises:
        SpecError: the URL is malformed, its driver is not installed, or the database
            cannot be reached.
    """
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        # The API thread pool and the executor threads share one pool per process.
        kwargs.update(pool_size=10, max_overflow=30)
    try:
        engine = create_engine(url, **kwargs)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
            if engine.url.database and engine.url.database != ":memory:":
                Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
        _create_tables(engine)
    except ModuleNotFoundError as exc:
        msg = (
            f"the database URL {url!r} needs the {exc.name!r} driver: pip install 'psycopg[binary]'"
        )
        raise SpecError(msg) from exc
    except (SQLAlchemyError, ValueError, OSError) as exc:
        msg = f"cannot use the database {_redact(url)!r}: {exc}; check database_url"
        raise SpecError(msg) from exc
    return engine


def _create_tables(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        Base.metadata.create_all(engine)
        add_missing_columns(engine, Base.metadata)
        return
    # Replicas starting together would race on CREATE TABLE (a unique violation in the
    # catalogue); a transaction-scoped advisory lock lets one create and the others see it.
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DDL_LOCK_KEY})
        Base.metadata.create_all(conn)
        add_missing_columns(conn, Base.metadata)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _redact(url: str) -> str:
    # Never echo a password back into logs or error messages.
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest
