"""The model registry in a real browser against a real ``mlaas4hep serve``.

Two versions of a model are uploaded (TFaaS ``/upload``, as the signed-in user); on the
model page the older one reads "not loaded" (the policy, in a neutral style), the predict
form starts at the training means of the bundle, a pasted event fills it; the version is
promoted to ``production`` and back again through the confirmation dialog, and right
after each confirmation the V2 HTTP API answers ``/v2/models/NAME/versions/production``
with the version the dialog named.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ui_helpers import UiServer, publish_screenshot

from mlaas4hep.artifact import BundleFeatures
from mlaas4hep.auth.local_issuer import LocalIssuer
from mlaas4hep.cli.token import DEFAULT_SCOPES
from mlaas4hep.serve.samples import write_sample_model

pytestmark = pytest.mark.slow
NAME = "reg-ui"
USER = "physicist"  # the UI's local user (ui_helpers.start_server)
MEANS = (1.5, -2.0, 40.0)


def _bundle(tmp: Path, seed: int) -> bytes:
    src = write_sample_model(tmp / f"v{seed}", (3, 8, 1), seed=seed)
    features = BundleFeatures(
        features=("f0", "f1", "f2"),
        task="binary",
        n_classes=2,
        class_names=("background", "signal"),
        normalize="standard",
        offset=MEANS,
        scale=(1.0, 2.0, 10.0),
    )
    members = {
        "model.onnx": (src / "model.onnx").read_bytes(),
        "metadata.json": (src / "metadata.json").read_bytes(),
        "features.json": json.dumps(features.to_json()).encode(),
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"{NAME}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture(scope="module")
def api(ui_server: UiServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """An API client of the UI's user, after publishing versions 1 and 2."""
    token = LocalIssuer(ui_server.data_dir).mint(USER, DEFAULT_SCOPES)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=ui_server.url, headers=headers, timeout=30) as client:
        tmp = tmp_path_factory.mktemp("bundles")
        for seed in (1, 2):
            body = _bundle(tmp, seed)
            answer = client.post("/upload", content=body, headers={"Content-Encoding": "gzip"})
            assert answer.status_code == 201, answer.text
        yield client


@pytest.fixture(scope="module")
def page(browser: Any, ui_server: UiServer) -> Iterator[Any]:
    context = browser.new_context(base_url=ui_server.url, viewport={"width": 1366, "height": 900})
    context.set_default_timeout(20_000)
    pg = context.new_page()
    pg.problems = []
    pg.on("pageerror", lambda exc: pg.problems.append(f"page error: {exc}"))
    pg.on("console", lambda msg: msg.type == "error" and pg.problems.append(msg.text))
    try:
        yield pg
    finally:
        context.close()


def _served_by_production(api: httpx.Client) -> str:
    """The version that answers ``…/versions/production/infer`` now (no waiting)."""
    body = {"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32",
                        "data": list(MEANS)}]}  # fmt: skip
    answer = api.post(f"/v2/models/{NAME}/versions/production/infer", json=body)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["model_version"])


def _confirm(page: Any, text: str) -> None:
    dialog = page.get_by_role("alertdialog")
    assert text in dialog.inner_text(), dialog.inner_text()
    dialog.get_by_role("button", name="Confirm").click()
    page.wait_for_url(f"**/ui/models/{NAME}?changed=*")


def test_versions_defaults_and_a_pasted_event(
    page: Any, api: httpx.Client, artifacts: Path
) -> None:
    page.goto("/ui/models")
    page.get_by_role("button", name=f"Sign in as {USER}").click()
    page.goto(f"/ui/models/{NAME}")
    versions = page.locator("#versions")
    row1 = versions.get_by_role("row", name="v1")
    assert "not loaded" in row1.inner_text()
    assert "policy: latest" in row1.inner_text()
    assert row1.locator(".state-failed").count() == 0  # neutral, not a red error
    assert page.get_by_label("f0", exact=True).input_value() == "1.5"
    assert page.get_by_label("f2", exact=True).input_value() == "40"
    assert "training means" in page.locator("#defaults-from").inner_text()
    page.get_by_label("Or paste an event").fill('{"f0": 3.25, "f2": 7}')
    page.get_by_role("button", name="Predict").click()
    page.locator("#prediction output").wait_for()
    assert page.get_by_label("f0", exact=True).input_value() == "3.25"
    assert page.get_by_label("f1", exact=True).input_value() == "-2"  # kept
    path = artifacts / "08-model-registry.png"
    page.screenshot(path=str(path), full_page=True)
    publish_screenshot(path)
    page.get_by_label("Or paste an event").fill("[1, 2]")
    page.get_by_role("button", name="Predict").click()
    assert "has 2 values; the model takes 3" in page.get_by_role("alert").inner_text()
    assert [p for p in page.problems if "status of 422" not in p] == [], page.problems
    page.problems.clear()  # the 422 is the answer asked for: the page says why


def test_promote_and_roll_back_with_the_v2_api_serving_at_once(
    page: Any, api: httpx.Client, artifacts: Path
) -> None:
    page.goto(f"/ui/models/{NAME}")
    page.get_by_label("Alias for v1").fill("production")
    page.get_by_role("button", name="Promote v1").click()
    _confirm(page, "changes from none (a new alias) to version 1")
    assert _served_by_production(api) == "1"
    assert f"{NAME}@production now serves version 1" in page.locator("#changed").inner_text()
    row1 = page.locator("#versions").get_by_role("row", name="v1")
    assert "serving" in row1.inner_text()  # an aliased version is loaded whatever the policy

    page.get_by_label("Alias for v2").fill("production")
    page.get_by_role("button", name="Promote v2").click()
    page.get_by_role("alertdialog").wait_for()
    path = artifacts / "09-model-promote-confirm.png"
    page.screenshot(path=str(path), full_page=True)
    publish_screenshot(path)
    _confirm(page, "changes from version 1 to version 2")
    assert _served_by_production(api) == "2"  # right after: no poll to wait for

    page.get_by_role("button", name="Roll back production to v1").click()
    _confirm(page, "changes from version 2 to version 1")
    assert _served_by_production(api) == "1"
    registry = api.get(f"/v2/repository/models/{NAME}/registry").json()
    assert registry["aliases"] == {"production": 1}
    assert [v["source"] for v in registry["versions"]] == ["upload", "upload"]
    assert page.problems == [], page.problems


def test_cancel_leaves_the_alias(page: Any, api: httpx.Client) -> None:
    page.goto(f"/ui/models/{NAME}")
    page.get_by_label("Alias for v2").fill("production")
    page.get_by_role("button", name="Promote v2").click()
    page.get_by_role("alertdialog").get_by_role("link", name="Cancel").click()
    assert _served_by_production(api) == "1"
