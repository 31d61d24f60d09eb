"""The web UI end to end, in a real browser against a real service.

Sign in (local issuer), upload the sample ROOT files, submit a small pipeline (validated
as it is typed), watch it run to the end, see the ROC plot load, deploy the model, get a
prediction from the form, and cancel a second job. Screenshots go to the printed
artifacts directory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ui_helpers import UiServer, publish_screenshot

pytestmark = pytest.mark.slow
pytest.importorskip("torch", reason="the sample pipeline trains an MLP (make installs torch)")
EXAMPLE = Path(__file__).parents[2] / "examples" / "tth-vs-qcd.yaml"
JOB_TIMEOUT_MS = 120_000


def small_spec(name: str, epochs: int) -> str:
    """The example pipeline on the uploaded sample files, small enough to train in seconds."""
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["name"] = name
    spec["data"]["datasets"][0]["files"] = ["dataset:signal.root"]
    spec["data"]["datasets"][1]["files"] = ["dataset:background.root"]
    spec["data"]["step_size"] = 2000
    spec["model"].update(hidden=[16], dropout=0.0)
    spec["train"].update(epochs=epochs, batch_size=256, device="cpu", early_stopping=None)
    spec.pop("deploy", None)  # the Deploy button publishes it
    return yaml.safe_dump(spec, sort_keys=False)


@pytest.fixture(scope="module")
def page(browser: Any, ui_server: UiServer) -> Iterator[Any]:
    context = browser.new_context(base_url=ui_server.url, viewport={"width": 1366, "height": 900})
    context.set_default_timeout(20_000)
    pg = context.new_page()
    # Script errors and CSP violations show up here; every screenshot checks there are none.
    pg.problems = []
    pg.on("pageerror", lambda exc: pg.problems.append(f"page error: {exc}"))
    pg.on("console", lambda msg: msg.type == "error" and pg.problems.append(msg.text))
    try:
        yield pg
    finally:
        context.close()


def shot(page: Any, artifacts: Path, name: str, *, key: bool = False) -> None:
    assert page.problems == [], page.problems
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if key:
        publish_screenshot(path)


def test_sign_in_with_the_local_issuer(page: Any, artifacts: Path) -> None:
    page.goto("/ui/jobs")
    assert "/ui/login" in page.url  # no session: the login page, not an error
    shot(page, artifacts, "01-login", key=True)
    page.get_by_role("button", name="Sign in as physicist").click()
    page.wait_for_url("**/ui/jobs")
    assert page.get_by_role("heading", name="Jobs").is_visible()
    session = next(c for c in page.context.cookies() if c["name"] == "mlaas4hep_session")
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert session["path"] == "/ui"


def test_upload_datasets_and_see_their_schema(
    page: Any, artifacts: Path, sample_files: dict[str, Path]
) -> None:
    page.goto("/ui/datasets")
    for key in ("signal", "background"):
        page.locator("#dataset-file").set_input_files(str(sample_files[key]))
        with page.expect_navigation():  # the page reloads once the upload is stored
            page.get_by_role("button", name="Upload").click()
    assert page.get_by_role("heading", name="signal.root").is_visible()
    page.locator("details summary").first.click()
    assert page.get_by_role("rowheader", name="MET_pt", exact=True).first.is_visible()
    shot(page, artifacts, "02-datasets", key=True)


def test_submit_watch_it_finish_and_see_the_plots(page: Any, artifacts: Path) -> None:
    page.goto("/ui/submit")
    editor = page.get_by_label("Pipeline spec (YAML or JSON)")
    status = page.locator("#spec-status")
    editor.fill("name: broken\nmodel: {kind: nope}\n")
    page.wait_for_selector("#spec-status.bad")
    assert "model.kind" in status.inner_text()  # the API's 422 message, inline
    shot(page, artifacts, "03-submit-invalid", key=True)
    editor.fill(small_spec("tth-ui", epochs=3))
    page.wait_for_selector("#spec-status.good")
    page.get_by_role("button", name="Submit", exact=True).click()
    page.wait_for_url(re.compile(r"/ui/jobs/[0-9a-f]{32}$"))
    page.wait_for_selector("#job-state.state-running, #job-state.state-succeeded")
    shot(page, artifacts, "04-job-running", key=True)
    # The page reloads itself when the job ends; the plots come with the succeeded page
    # (below the interactive charts: lazy images, not visible until scrolled to).
    page.wait_for_selector(
        'img[data-plot="plots/roc.png"]', state="attached", timeout=JOB_TIMEOUT_MS
    )
    assert page.locator("#job-state").inner_text() == "succeeded"
    roc = page.locator('img[data-plot="plots/roc.png"]')
    roc.scroll_into_view_if_needed()
    # Functions, never expression strings: the page's CSP forbids eval.
    roc.evaluate("img => img.decode()")
    assert roc.evaluate("img => img.naturalWidth") > 0
    assert page.get_by_role("heading", name="Cut flow").is_visible()
    assert page.get_by_role("link", name="model.onnx").is_visible()
    shot(page, artifacts, "05-job-succeeded", key=True)


def test_deploy_and_predict_from_the_form(page: Any, artifacts: Path) -> None:
    page.get_by_label("Model name").fill("tth-ui")
    page.get_by_role("button", name="Deploy").click()
    page.wait_for_url("**/ui/models/tth-ui?**")
    assert "Deployed as version 1" in page.locator("main").inner_text()
    page.get_by_label("MET_pt").fill("85.5")
    page.get_by_label("HT", exact=True).fill("420")
    page.get_by_role("button", name="Predict").click()
    prediction = page.locator("#prediction output")
    prediction.wait_for()
    score = float(prediction.inner_text().split(",")[0])
    assert 0.0 <= score <= 1.0
    assert "tritonclient" in page.locator("main").inner_text()
    shot(page, artifacts, "06-model-predict", key=True)
    page.goto("/ui/models")
    assert page.get_by_role("link", name="tth-ui").is_visible()


def test_cancel_a_second_job(page: Any, artifacts: Path) -> None:
    page.goto("/ui/submit")
    page.get_by_label("Pipeline spec (YAML or JSON)").fill(small_spec("tth-ui-long", epochs=500))
    page.get_by_role("button", name="Submit", exact=True).click()
    page.wait_for_url(re.compile(r"/ui/jobs/[0-9a-f]{32}$"))
    page.get_by_role("button", name="Cancel job").click()
    page.wait_for_selector("#job-state.state-cancelled", timeout=30_000)
    page.goto("/ui/jobs")
    rows = page.locator("tbody tr")
    assert rows.filter(has_text="tth-ui-long").filter(has_text="cancelled").count() == 1
    assert rows.filter(has_text="succeeded").count() == 1
    shot(page, artifacts, "07-jobs", key=True)
    page.goto("/ui/jobs?state=cancelled")
    assert page.locator("tbody tr").count() == 1
