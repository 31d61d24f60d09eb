"""The job page's interactive evaluation charts in a real browser: the confusion matrix of
a 3-class run and the prediction-vs-truth map, response and resolution of a regression run
(heatmaps and line charts with hover), and the permutation importance bars.

Two one-epoch SGD runs on the uploaded ttH-like sample (about a second each). The
page must raise no console error (the CSP forbids inline styles and scripts).
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
EXAMPLES = Path(__file__).parents[2] / "examples"
JOB_TIMEOUT_MS = 120_000


def spec_of(example: str, name: str) -> str:
    """*example* on the uploaded ttH-like sample: one SGD epoch on a few thousand events."""
    spec = yaml.safe_load((EXAMPLES / example).read_text())
    spec["name"] = name
    spec["data"]["datasets"] = spec["data"]["datasets"][:1]
    spec["data"]["datasets"][0]["files"] = ["dataset:signal.root"]
    spec["data"]["max_events"] = 3000
    spec["model"] = {"kind": "sgd", "loss": spec["model"].get("loss", "log_loss")}
    spec["train"] = {"epochs": 1}
    spec.pop("deploy", None)
    return yaml.safe_dump(spec, sort_keys=False)


@pytest.fixture(scope="module")
def page(browser: Any, ui_server: UiServer, sample_files: dict[str, Path]) -> Iterator[Any]:
    """A signed-in page, the ttH-like sample uploaded as ``signal.root``."""
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
    pg.locator("#dataset-file").set_input_files(str(sample_files["signal"]))
    with pg.expect_navigation():
        pg.get_by_role("button", name="Upload").click()
    try:
        yield pg
    finally:
        context.close()


def run(page: Any, spec: str) -> None:
    """Submit *spec* through the form and wait on its page until it succeeded."""
    page.goto("/ui/submit")
    page.get_by_label("Pipeline spec (YAML or JSON)").fill(spec)
    page.get_by_role("button", name="Submit", exact=True).click()
    page.wait_for_url(re.compile(r"/ui/jobs/[0-9a-f]{32}$"))
    page.wait_for_selector("#job-state.state-succeeded", timeout=JOB_TIMEOUT_MS)
    page.reload()  # the charts of the finished run


def hover(page: Any, target: Any, chart: str) -> str:
    """Move the mouse over *target*'s centre; the text of *chart*'s tooltip."""
    target.scroll_into_view_if_needed()
    box = target.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    tip = page.locator(f"#{chart} .chart-tip")
    tip.wait_for(state="visible")
    return str(tip.inner_text())


def shot(page: Any, artifacts: Path, name: str) -> None:
    assert page.problems == [], page.problems
    path = artifacts / f"{name}.png"
    page.locator("#run-charts").screenshot(path=str(path))
    publish_screenshot(path)


def test_confusion_matrix_heatmap(page: Any, artifacts: Path) -> None:
    spec = yaml.safe_load(spec_of("one-file-three-class.yaml", "three-class-charts"))
    spec["preprocess"]["features"].pop("objects")  # the leptons would tell the class exactly
    run(page, yaml.safe_dump(spec))
    cells = page.locator("#chart-confusion rect[data-cell]")
    assert cells.count() == 9  # 3 x 3, every fraction drawn (0 too)
    text = hover(page, page.locator('#chart-confusion rect[data-cell="2,1"]'), "chart-confusion")
    assert "true class: dilepton" in text
    assert "predicted: one-lepton" in text
    fraction = float(re.search(r"fraction: ([0-9.e-]+)", text).group(1))
    assert 0 <= fraction <= 1
    assert re.search(r"\nevents: \d+", text)
    assert page.locator("#chart-confusion .chart-hover").get_attribute("visibility") == "visible"
    assert page.locator('#run-charts [data-chart="roc"] polyline').count() >= 3  # one vs rest
    assert page.locator('#run-charts [data-chart="regression"]').count() == 0
    shot(page, artifacts, "eval-charts-confusion")


def test_regression_heatmap_response_and_importance(page: Any, artifacts: Path) -> None:
    run(page, spec_of("leading-jet-regression.yaml", "regression-charts"))
    assert page.locator('#run-charts [data-chart="roc"]').count() == 0
    cells = page.locator("#chart-regression rect[data-cell]")
    assert cells.count() > 10  # the filled bins of 60 x 60
    text = hover(page, cells.nth(cells.count() // 2), "chart-regression")
    assert "truth: " in text
    assert "prediction: " in text
    assert float(re.search(r"events: ([0-9.e+-]+)", text).group(1)) > 0
    assert page.locator("#chart-regression .chart-colourbar").count() == 1
    heat = page.locator("#chart-regression svg.chart-svg").bounding_box()
    all_cells = cells.count()
    page.mouse.move(heat["x"] + heat["width"] * 0.5, heat["y"] + heat["height"] * 0.2)
    page.mouse.down()
    page.mouse.move(heat["x"] + heat["width"] * 0.7, heat["y"] + heat["height"] * 0.6, steps=4)
    page.mouse.up()  # zoomed to the bins under the rectangle
    reset = page.locator("#chart-regression").get_by_role("button", name="Reset zoom")
    assert reset.is_enabled()
    assert 0 < cells.count() < all_cells
    reset.click()
    assert cells.count() == all_cells
    response = page.locator('#chart-response polyline[data-series="response"]')
    assert len(response.get_attribute("points").split()) >= 5  # bins of the truth
    svg = page.locator("#chart-response svg.chart-svg")
    assert "response:" in hover(page, svg, "chart-response")
    assert page.locator('#chart-resolution polyline[data-series="resolution"]').count() == 1
    bars = page.locator("#chart-importance rect[data-bar]")
    assert bars.count() >= 3  # MET_pt, lead_pt, nJet, Muon...
    assert "±" in hover(page, bars.first, "chart-importance")
    shot(page, artifacts, "eval-charts-regression")
