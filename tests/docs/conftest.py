"""The documentation session: one working directory and one real ``mlaas4hep serve``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from doc_runner import DocsSession


@pytest.fixture(scope="session")
def docs_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocsSession]:
    session = DocsSession(tmp_path_factory.mktemp("docs"))
    try:
        yield session.start()
    finally:
        session.stop()
