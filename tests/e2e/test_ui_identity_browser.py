"""Issue 17, item 4, in a browser: the README's token user is the UI's user.

A real ``mlaas4hep serve`` (no ``ui.local_user``) and the real
``mlaas4hep token --user alice --save``; a job submitted with the saved token; then
Chromium opens the UI: the sign-in form suggests alice, its button follows what is typed,
and pressing it shows alice's job. A second browser pastes a garbage token (refused, with
the reason) and then the saved one (signed in as alice).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ui_helpers import UiServer

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "jobs"))
from jobs_helpers import pipeline_doc

from mlaas4hep.config import MLAAS4HEP_ARGV
from mlaas4hep.loopback import free_port


def _env(base: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLAAS4HEP_")}
    env["XDG_CONFIG_HOME"] = str(base / "config")  # the CLI's token file, for both
    env["MLAAS4HEP_EXECUTOR__WORKERS"] = "1"
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    base = tmp_path_factory.mktemp("identity-ui")
    data_dir, port = base / "data", free_port()
    log = base / f"server-{port}.log"
    with log.open("ab") as out:
        cmd = [*MLAAS4HEP_ARGV, "serve", "--port", str(port), "--data-dir", str(data_dir)]
        proc = subprocess.Popen(cmd, env=_env(base), stdout=out, stderr=out)
    ui = UiServer(data_dir, port, proc, log)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{ui.url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            ui.stop()
            pytest.fail(f"mlaas4hep serve did not answer:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    try:
        yield ui
    finally:
        ui.stop()


def _readme_token(server: UiServer) -> str:
    """``mlaas4hep token --user alice --save``, as the README says."""
    base = server.data_dir.parent
    env = {**_env(base), "MLAAS4HEP_DATA_DIR": str(server.data_dir)}
    cmd = [*MLAAS4HEP_ARGV, "token", "--user", "alice", "--save"]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=60)
    return (base / "config" / "mlaas4hep" / "token").read_text().strip()


def test_the_readme_user_is_the_ui_user(server: UiServer, browser: Any, artifacts: Path) -> None:
    token = _readme_token(server)
    r = httpx.post(
        f"{server.url}/api/v1/jobs",
        json=pipeline_doc("alices-first-job"),
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert r.status_code == 201, r.text

    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.goto(f"{server.url}/ui/jobs")
    assert "/ui/login" in page.url
    name = page.get_by_label("User name")
    assert name.input_value() == "alice"
    page.screenshot(path=str(artifacts / "identity-login.png"), full_page=True)
    name.fill("bob")
    page.get_by_role("button", name="Sign in as bob").wait_for()  # the label follows
    name.fill("alice")
    page.get_by_role("button", name="Sign in as alice").click()
    page.wait_for_url("**/ui/jobs")
    assert "alices-first-job" in page.content()
    assert "No jobs yet" not in page.content()
    assert page.locator("header").get_by_text("alice").count() >= 1
    page.close()

    other = browser.new_context().new_page()
    other.goto(f"{server.url}/ui/login")
    other.get_by_label("Access token", exact=True).fill("not-a-token")
    other.get_by_role("button", name="Sign in with this token").click()
    assert "that token was refused: malformed token" in other.content()
    assert other.get_by_label("Access token", exact=True).input_value() == ""  # never put back
    other.get_by_label("Access token", exact=True).fill(token)
    other.get_by_role("button", name="Sign in with this token").click()
    other.wait_for_url("**/ui/jobs")
    assert "alices-first-job" in other.content()
    other.context.close()
