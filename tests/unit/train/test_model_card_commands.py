"""The commands the model card prints run as written (curl quoting, the Python snippet).

The curl line must leave ``$TOKEN`` to the shell (double quotes, not single ones) and
name the deployed model in the URL. It is run here by bash with ``curl`` replaced by a
function that prints its arguments, so the test sees what the shell hands to curl; the
integration suite (tests/integration/test_model_card_commands.py) sends it to a real
inference server.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from mlaas4hep.train.bundle import SERVICE_URL
from mlaas4hep.train.run import run_source

from .conftest import make_spec
from .fakes import NAMES, FakeSource


def code_block(card: str, language: str) -> str:
    """The first fenced block of *language* in *card*."""
    found = re.search(rf"```{language}\n(.*?)```", card, re.S)
    assert found is not None, f"no {language} block in the card:\n{card}"
    return found.group(1)


def curl_command(card: str) -> str:
    """The card's curl command as one shell line (backslash continuations joined)."""
    return code_block(card, "bash").replace("\\\n", " ").strip()


def bundle(tmp_path: Path, deploy: str | None) -> Path:
    spec = make_spec({"kind": "sgd"}, epochs=1)
    if deploy is not None:
        raw = spec.model_dump(mode="json") | {"deploy": {"name": deploy}}
        spec = type(spec).model_validate(raw)
    run_source(spec, FakeSource(events=2000), tmp_path)
    return tmp_path


def test_the_curl_line_leaves_the_token_to_the_shell(tmp_path: Path) -> None:
    card = (bundle(tmp_path, "tth.v2-classifier") / "README.md").read_text()
    command = curl_command(card)
    assert '-H "Authorization: Bearer $TOKEN"' in command  # the precise quoting
    assert "'Authorization" not in command
    words = shlex.split(command)
    assert words[0] == "curl"
    assert words[-1] == f"{SERVICE_URL}/v2/models/tth.v2-classifier/infer"
    # What bash really passes to curl, with TOKEN set in the environment:
    shown = subprocess.run(
        ["bash", "-c", 'curl() { printf "%s\\n" "$@"; }; ' + command],
        env={"TOKEN": "s3cr3t.t0ken", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert shown[:2] == ["-H", "Authorization: Bearer s3cr3t.t0ken"]
    body = json.loads(shown[shown.index("-d") + 1])
    assert body["inputs"][0]["shape"] == [1, len(NAMES)]
    assert body["inputs"][0]["name"] == "features"
    assert body["inputs"][0]["datatype"] == "FP32"
    assert shown[-1] == f"{SERVICE_URL}/v2/models/tth.v2-classifier/infer"


def test_the_python_snippet_runs_in_the_bundle(tmp_path: Path) -> None:
    out = bundle(tmp_path, None)  # no deploy: the card names the spec's name
    card = (out / "README.md").read_text()
    assert curl_command(card).endswith(f"{SERVICE_URL}/v2/models/unit-test/infer")
    snippet = code_block(card, "python") + "\nprint(scores.shape, float(scores[0, 0]))\n"
    done = subprocess.run(
        [sys.executable, "-c", snippet], cwd=out, capture_output=True, text=True, check=True
    )
    shape, score = done.stdout.split(")")
    assert shape == "(1, 1"
    assert 0.0 <= float(score) <= 1.0
    assert np.isfinite(float(score))
