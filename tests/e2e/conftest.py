"""Browser tests of the web UI: a real ``mlaas4hep serve`` and Debian's Chromium.

``ui_server``: one ``mlaas4hep serve`` process per module (real executor, real
``mlaas4hep run`` in the sandbox, inference routes), on a free loopback port, in the local
issuer mode. ``browser``: headless Chromium through Playwright (the PyPI wheel, driving
``/usr/bin/chromium``; ``playwright install`` is never needed). ``artifacts``: where
screenshots go (``$MLAAS4HEP_ARTIFACTS/e2e-ui``, default
``/tmp/artifacts/e2e-ui``); the path is printed. Set
``MLAAS4HEP_UI_SCREENSHOTS=docs/img/ui`` to also copy the key screenshots there (that is how
docs/ui.md's images are made).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ui_helpers import CHROMIUM, CHROMIUM_ARGS, UiServer, start_server


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    server = start_server(tmp_path_factory.mktemp("ui-server") / "data")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright==1.63.0 (the e2e tests need it)"
    )
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} not found: apt-get install chromium (the e2e tests need it)")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    # Not under pytest's basetemp, which later sessions rotate away.
    root = Path(os.environ.get("MLAAS4HEP_ARTIFACTS", Path(tempfile.gettempdir()) / "artifacts"))
    path = root / "e2e-ui"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    print(f"\nUI screenshots: {path}")
    return path
