"""The API documentation pages in a real browser, with no network beyond loopback.

``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) of a real ``mlaas4hep serve`` must render
from the service alone: every request of the browser context to a host that is not
loopback is refused and recorded, and none may be attempted. Swagger UI must show the
operations and the Authorize button, and a token entered there must be sent by
"Try it out". Screenshots go to the test's temporary directory (and the Swagger UI one
to ``$MLAAS4HEP_UI_SCREENSHOTS`` when set, as the UI tests do: docs/img/ui).
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from ui_helpers import UiServer, publish_screenshot

from mlaas4hep.config import MLAAS4HEP_ARGV


def is_loopback(url: str) -> bool:
    """Whether *url* names this machine (127.0.0.0/8, ::1, localhost)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture
def offline(browser: Any, ui_server: UiServer) -> Iterator[tuple[Any, list[str]]]:
    """A page whose context reaches loopback only; the list collects refused URLs."""
    context = browser.new_context(base_url=ui_server.url, viewport={"width": 1366, "height": 900})
    context.set_default_timeout(20_000)
    refused: list[str] = []

    def only_loopback(route: Any) -> None:
        if is_loopback(route.request.url):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("blockedbyclient")

    context.route("**/*", only_loopback)
    page = context.new_page()
    page.problems = []
    page.on("pageerror", lambda exc: page.problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and page.problems.append(msg.text))
    # Requests the route handler might not see (service workers, prefetches) still show here.
    page.on("request", lambda req: is_loopback(req.url) or refused.append(req.url))
    try:
        yield page, refused
    finally:
        context.close()


def mint_token(server: UiServer, user: str) -> str:
    cmd = [*MLAAS4HEP_ARGV, "token", "--user", user, "--data-dir", str(server.data_dir)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLAAS4HEP_")}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip()


def test_swagger_ui_renders_offline_and_authorizes(
    offline: tuple[Any, list[str]], ui_server: UiServer, tmp_path: Path
) -> None:
    page, refused = offline
    page.goto("/docs")
    operations = page.locator(".opblock")
    operations.first.wait_for()
    assert operations.count() >= 8  # the job routes at least
    assert page.locator(
        ".opblock-summary-path", has_text="/api/v1/jobs/{job_id}"
    ).first.is_visible()
    authorize = page.locator("button.authorize")
    assert authorize.is_visible()
    # Authenticated operations carry a lock; the probes do not.
    jobs = page.locator(".opblock", has=page.locator('[data-path="/api/v1/jobs"]')).first
    assert jobs.locator("button.authorization__btn").count() == 1
    healthz = page.locator(".opblock", has=page.locator('[data-path="/healthz"]')).first
    assert healthz.locator("button.authorization__btn").count() == 0
    page.screenshot(path=str(tmp_path / "api-docs-swagger.png"), full_page=False)
    publish_screenshot(tmp_path / "api-docs-swagger.png")  # docs/service.md shows it

    # Authorize with a real token of the local issuer, then "Try it out" sends it.
    authorize.click()
    page.locator(".modal-ux input[type=text], .modal-ux input[type=password]").first.fill(
        mint_token(ui_server, "physicist")
    )
    page.locator(".modal-ux button.modal-btn.auth.authorize").click()
    page.locator(".modal-ux button.btn-done").click()
    listing = page.locator("#operations-jobs-list_jobs_api_v1_jobs_get")
    listing.locator(".opblock-summary").click()
    listing.get_by_role("button", name="Try it out").click()
    with page.expect_response(lambda r: urlsplit(r.url).path == "/api/v1/jobs") as answer:
        listing.get_by_role("button", name="Execute").click()
    response = answer.value
    assert response.request.headers.get("authorization", "").startswith("Bearer ")
    assert response.status == 200, response.text()
    listing.locator(".live-responses-table .response-col_status", has_text="200").wait_for()
    page.screenshot(path=str(tmp_path / "swagger-ui-try-it-out.png"), full_page=False)
    print(f"\nAPI docs screenshots: {tmp_path}")
    assert refused == [], f"requests beyond loopback: {refused}"
    assert page.problems == [], page.problems


def test_redoc_renders_offline(offline: tuple[Any, list[str]], tmp_path: Path) -> None:
    page, refused = offline
    page.goto("/redoc")
    page.locator(".api-content").wait_for()
    page.get_by_role("heading", name="mlaas4hep").first.wait_for()
    assert page.locator("[role=menuitem]").count() >= 8  # a menu entry per operation
    # The operations show the bearer scheme and their problem answers.
    assert page.get_by_text("Authorizations:").count() >= 8
    assert page.get_by_role("heading", name="Cancel").first.is_visible()
    page.screenshot(path=str(tmp_path / "redoc.png"), full_page=False)
    print(f"\nAPI docs screenshot: {tmp_path}")
    assert refused == [], f"requests beyond loopback: {refused}"
    assert page.problems == [], page.problems
