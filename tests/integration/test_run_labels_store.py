"""Run labels in the job store on SQLite and a real PostgreSQL server: stored and read
back, and added to a database created before they existed (``jobs/migrate.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pg import postgres_server

from mlaas4hep.jobs.store import JobStore, NewJob

LABELS = ("run_name", "tags", "parent")


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    url: str = request.getfixturevalue("pg_url")
    store = JobStore(url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM jobs")
    store.close()
    return url


def test_labels_round_trip_and_old_databases_gain_the_columns(db_url: str) -> None:
    store = JobStore(db_url)
    parent, _ = store.create(NewJob(owner="a", name="p", spec="{}", request_hash="1"))
    child, _ = store.create(
        NewJob(owner="a", name="c", spec="{}", request_hash="2", run_name="trial 3",
               tags={"study": "s1", "b": "x y"}, parent=parent.id)
    )  # fmt: skip
    got = store.get(child.id)
    assert (got.run_name, got.tags, got.parent) == (
        "trial 3",
        {"b": "x y", "study": "s1"},
        parent.id,
    )
    with store.engine.begin() as conn:  # as a database from before the labels
        for column in LABELS:
            conn.exec_driver_sql(f"ALTER TABLE jobs DROP COLUMN {column}")
    store.close()
    reopened = JobStore(db_url)
    try:
        old = reopened.get(child.id)
        assert (old.run_name, old.tags, old.parent, old.title) == (None, {}, None, "c")
        again, _ = reopened.create(
            NewJob(owner="a", name="n", spec="{}", request_hash="3", run_name="new")
        )
        assert reopened.get(again.id).run_name == "new"
    finally:
        reopened.close()
