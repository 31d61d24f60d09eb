"""Runs in a real browser against a real service: labels at submission, live per-epoch
charts while a job runs, the runs table (sort, filter, search), the compare view with
overlaid curves, and clone-and-resubmit with an edit.

One ``mlaas4hep serve`` and one signed-in page for the module; the runs train a tiny MLP
for two epochs on the sample files. Screenshots go to the printed artifacts directory
(and, with ``MLAAS4HEP_UI_SCREENSHOTS=docs/img/ui``, to docs/ui.md's images).
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


def small_spec(epochs: int, lr: float) -> str:
    """The example pipeline on the uploaded samples, small enough to train in seconds."""
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["name"] = "tth-runs"
    spec["data"]["datasets"][0]["files"] = ["dataset:signal.root"]
    spec["data"]["datasets"][1]["files"] = ["dataset:background.root"]
    spec["data"]["step_size"] = 2000
    spec["model"].update(hidden=[8], dropout=0.0)
    spec["train"].update(epochs=epochs, batch_size=256, lr=lr, device="cpu", early_stopping=None)
    spec.pop("deploy", None)
    return yaml.safe_dump(spec, sort_keys=False)


@pytest.fixture(scope="module")
def page(browser: Any, ui_server: UiServer, sample_files: dict[str, Path]) -> Iterator[Any]:
    """A signed-in page, the sample files uploaded as datasets."""
    context = browser.new_context(base_url=ui_server.url, viewport={"width": 1366, "height": 900})
    context.set_default_timeout(20_000)
    pg = context.new_page()
    pg.problems = []
    pg.on("pageerror", lambda exc: pg.problems.append(f"page error: {exc}"))
    pg.on("console", lambda msg: msg.type == "error" and pg.problems.append(msg.text))
    pg.goto("/ui/login")
    pg.get_by_role("button", name="Sign in as physicist").click()
    pg.wait_for_url("**/ui/jobs")
    pg.goto("/ui/datasets")
    for key in ("signal", "background"):
        pg.locator("#dataset-file").set_input_files(str(sample_files[key]))
        with pg.expect_navigation():
            pg.get_by_role("button", name="Upload").click()
    try:
        yield pg
    finally:
        context.close()


def shot(page: Any, artifacts: Path, name: str) -> None:
    assert page.problems == [], page.problems
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    publish_screenshot(path)


def submit(page: Any, spec: str, run_name: str, tags: str) -> str:
    """Submit through the form; returns the new job's id."""
    page.goto("/ui/submit")
    page.get_by_label("Run name").fill(run_name)
    page.get_by_label("Tags").fill(tags)
    page.get_by_label("Pipeline spec (YAML or JSON)").fill(spec)
    page.get_by_role("button", name="Submit", exact=True).click()
    page.wait_for_url(re.compile(r"/ui/jobs/[0-9a-f]{32}$"))
    return str(page.url.rsplit("/", 1)[1])


def finish(page: Any, job_id: str) -> None:
    page.goto(f"/ui/jobs/{job_id}")
    page.wait_for_selector("#job-state.state-succeeded", timeout=JOB_TIMEOUT_MS)


def epochs_drawn(page: Any) -> int:
    return int(page.locator("#live-charts").get_attribute("data-epochs") or 0)


def test_live_charts_follow_a_running_job(page: Any, artifacts: Path) -> None:
    job_id = submit(page, small_spec(epochs=400, lr=0.05), "live-long", "purpose=live")
    page.wait_for_function(
        "() => Number(document.getElementById('live-charts').dataset.epochs) >= 1",
        timeout=JOB_TIMEOUT_MS,
    )
    first = epochs_drawn(page)
    page.wait_for_function(
        f"() => Number(document.getElementById('live-charts').dataset.epochs) > {first}",
        timeout=JOB_TIMEOUT_MS,
    )
    assert epochs_drawn(page) > first  # redrawn by the page's own polling, no reload
    loss = page.locator('#live-loss polyline[data-series="val_loss"]')
    assert len(loss.get_attribute("points").split()) == epochs_drawn(page)
    assert "epoch" in page.locator("#job-log").inner_text()  # the training output, logged
    live = page.locator("#live-loss svg.chart-svg")
    live.scroll_into_view_if_needed()
    box = live.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5)
    assert "val_loss" in page.locator("#live-loss .chart-tip").inner_text()  # hover values
    shot(page, artifacts, "runs-live-charts")
    page.get_by_role("button", name="Cancel job").click()
    page.wait_for_selector("#job-state.state-cancelled", timeout=30_000)
    assert job_id


def test_runs_table_sort_filter_search(page: Any, artifacts: Path) -> None:
    fast = submit(page, small_spec(epochs=2, lr=0.01), "mlp-lr-0.01", "sample=tth, size=small")
    slow = submit(page, small_spec(epochs=2, lr=0.0003), "mlp-lr-0.0003", "sample=tth")
    finish(page, fast)
    finish(page, slow)
    page.goto("/ui/runs")
    table = page.locator("#runs-table")
    names = lambda: [  # noqa: E731 - the visible run names, in order
        n.inner_text() for n in table.locator("tbody tr:not([hidden]) td:nth-child(2) a").all()
    ]
    assert set(names()) == {"mlp-lr-0.01", "mlp-lr-0.0003", "live-long"}
    assert table.get_by_role("columnheader", name="train.lr").is_visible()
    lr = table.locator('th[data-sort-key="param:train.lr"] button')
    lr.click()  # descending
    assert names() == ["live-long", "mlp-lr-0.01", "mlp-lr-0.0003"]
    lr.click()  # ascending
    assert names() == ["mlp-lr-0.0003", "mlp-lr-0.01", "live-long"]
    assert table.locator('th[data-sort-key="metric:auc"]').is_visible()
    page.get_by_label("State").select_option("cancelled")
    assert names() == ["live-long"]
    page.get_by_label("State").select_option("")
    page.get_by_label("Tags").fill("size=small")
    assert names() == ["mlp-lr-0.01"]
    page.get_by_label("Tags").fill("")
    page.get_by_role("searchbox", name="Search").fill("0003")
    assert names() == ["mlp-lr-0.0003"]
    assert page.locator("#runs-count").inner_text() == "1 run"
    page.get_by_role("searchbox", name="Search").fill("")
    shot(page, artifacts, "runs-table")
    # Without the script the same query runs on the server (the form's GET parameters).
    page.goto("/ui/runs?search=mlp-lr&sort=param:train.lr&order=asc")
    assert names() == ["mlp-lr-0.0003", "mlp-lr-0.01"]


def test_compare_two_runs(page: Any, artifacts: Path) -> None:
    page.goto("/ui/runs?search=mlp-lr")
    page.get_by_label("select mlp-lr-0.01").check()
    page.get_by_label("select mlp-lr-0.0003").check()
    page.get_by_role("button", name="Compare selected").click()
    page.wait_for_url("**/ui/runs/compare?**")
    differs = page.locator("#compare-params tr.differs th")
    assert "train.lr" in differs.all_inner_texts()
    assert "model.kind" not in differs.all_inner_texts()
    page.get_by_label("Only the differences").check()
    visible = page.locator("#compare-params tbody tr:not([hidden])")
    assert visible.count() == differs.count()
    assert page.locator("#compare-metrics th", has_text="auc").first.is_visible()
    roc = page.locator('[data-chart="roc"] polyline')
    assert roc.count() == 4  # two runs, test and train each
    loss = page.locator('[data-chart="loss"] polyline')
    assert loss.count() == 4  # two runs, validation and train loss
    chart = page.locator('[data-chart="roc"] svg.chart-svg')
    chart.scroll_into_view_if_needed()
    box = chart.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.6, steps=4)
    page.mouse.up()
    reset = page.locator('[data-chart="roc"]').get_by_role("button", name="Reset zoom")
    assert reset.is_enabled()  # zoomed in
    shot(page, artifacts, "runs-compare")
    reset.click()
    assert reset.is_disabled()


def test_a_finished_run_has_interactive_charts(page: Any, artifacts: Path) -> None:
    page.goto("/ui/runs?search=mlp-lr-0.01")
    page.get_by_role("link", name="mlp-lr-0.01").click()
    charts = page.locator("#run-charts")
    assert charts.locator('[data-chart="roc"] polyline').count() == 2  # test and train
    assert charts.locator('[data-chart="scores"] polyline').count() == 2  # per true class
    chart = charts.locator('[data-chart="roc"] svg.chart-svg')
    chart.scroll_into_view_if_needed()
    box = chart.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    assert "AUC" in charts.locator('[data-chart="roc"] .chart-tip').inner_text()
    shot(page, artifacts, "runs-job-charts")


def test_clone_and_resubmit_with_an_edit(page: Any, artifacts: Path) -> None:
    page.goto("/ui/runs?search=mlp-lr-0.01")
    page.get_by_role("link", name="mlp-lr-0.01").click()
    page.get_by_role("link", name="Clone and edit").click()
    page.wait_for_url("**/ui/submit?clone=**")
    assert page.get_by_label("Run name").input_value() == "mlp-lr-0.01-clone"
    assert page.get_by_label("Tags").input_value() == "sample=tth, size=small"
    editor = page.get_by_label("Pipeline spec (YAML or JSON)")
    text = editor.input_value()
    assert "dataset:signal.root" in text  # the upload by name, not its path in the service
    editor.fill(text.replace("lr: 0.01", "lr: 0.005"))
    page.get_by_label("Run name").fill("mlp-lr-0.005")
    page.wait_for_selector("#spec-status.good")
    shot(page, artifacts, "runs-clone")
    page.get_by_role("button", name="Submit", exact=True).click()
    page.wait_for_url(re.compile(r"/ui/jobs/[0-9a-f]{32}$"))
    assert page.get_by_role("heading", name="mlp-lr-0.005").is_visible()
    assert "sample=tth" in page.locator("#job-tags").inner_text()
    assert "lr: 0.005" in page.locator("pre.yaml").inner_text()
    page.get_by_role("button", name="Cancel job").click()  # the new run is queued: enough
    page.wait_for_selector("#job-state.state-cancelled", timeout=30_000)
