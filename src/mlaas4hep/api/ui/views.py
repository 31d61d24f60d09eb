"""What the pages show, computed from the service's own objects (no HTTP here).

YAML highlighting, durations and sizes for humans, a job's results (cut flow, metrics,
plots, artifacts) and the query snippets of a model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from markupsafe import Markup, escape

from mlaas4hep.jobs.runs import read_artifact_json
from mlaas4hep.jobs.service import Artifact, JobService
from mlaas4hep.jobs.states import State
from mlaas4hep.jobs.store import JobRecord

LOG_TAIL_BYTES = 16 * 1024
PLOT_TITLES = {
    "roc.png": "Background rejection vs signal efficiency (test, and train dashed)",
    "scores.png": "Score distributions per true class, train and test",
    "scores_log.png": "Score distributions, log scale",
    "history.png": "Loss and validation AUC per epoch",
    "importance.png": "Feature importances",
    "permutation_importance.png": "Permutation importance",
    "confusion.png": "Confusion matrix (normalised by true class)",
    "regression.png": "Prediction vs truth",
    "response.png": "Response and resolution vs truth",
}
_KEY = re.compile(r"^(\s*(?:-\s+)?)([A-Za-z0-9_.\-]+|\"[^\"]*\"|'[^']*')(:)(\s|$)")
_NUMBER = re.compile(r"^-?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+)$")
_LITERALS = {"true", "false", "null", "~", "yes", "no"}


def highlight_yaml(text: str) -> Markup:
    """*text* as escaped HTML with ``<span class="y-…">`` around keys, values and comments.

    A line-based highlighter for readable specs: it never interprets the text, and every
    piece of it goes through :func:`markupsafe.escape`.
    """
    return Markup("\n").join(_highlight_line(line) for line in text.splitlines())


def _highlight_line(line: str) -> Markup:
    body, comment = _split_comment(line)
    out = Markup("")
    match = _KEY.match(body)
    if match:
        indent, key, colon, _ = match.groups()
        out += escape(indent) + Markup('<span class="y-key">%s</span>') % key + escape(colon)
        body = body[match.end(3) :]
    out += _value(body)
    if comment:
        out += Markup('<span class="y-comment">%s</span>') % comment
    return out


def _value(text: str) -> Markup:
    stripped = text.strip()
    if not stripped:
        return escape(text)
    lead = text[: len(text) - len(text.lstrip())]
    if stripped in _LITERALS:
        css = "y-literal"
    elif _NUMBER.match(stripped):
        css = "y-number"
    elif stripped[0] in "\"'":
        css = "y-string"
    else:
        return escape(text)
    return escape(lead) + Markup('<span class="%s">%s</span>') % (css, stripped)


def _split_comment(line: str) -> tuple[str, str]:
    quote: str | None = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i], line[i:]
    return line, ""


def spec_yaml(job: JobRecord) -> str:
    """The job's validated spec as YAML."""
    return yaml.safe_dump(json.loads(job.spec), sort_keys=False)


def duration(seconds: float | None) -> str:
    """``4125.0`` -> ``'1 h 8 min'``; ``None`` -> a dash."""
    if seconds is None or seconds < 0:
        return "–"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    minutes = (s % 3600) // 60
    return f"{s // 3600} h {minutes} min" if minutes else f"{s // 3600} h"


def size(n: int | None) -> str:
    """Bytes for humans (decimal units)."""
    if n is None or n < 0:
        return "built on request"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def number(value: Any) -> str:
    """A metric value: 4 significant digits for floats."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "–" if value is None else str(value)


@dataclass
class JobResults:
    """What a succeeded job produced, for its page."""

    artifacts: list[Artifact] = field(default_factory=list)
    other: list[Artifact] = field(default_factory=list)  # checkpoints, caches
    plots: list[tuple[str, str]] = field(default_factory=list)  # (artifact name, alt text)
    cutflow: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def job_results(service: JobService, job: JobRecord) -> JobResults:
    """Artifacts, plots, cut flow and test metrics of *job* (empty unless it succeeded)."""
    if job.state is not State.SUCCEEDED:
        return JobResults()
    artifacts = service.artifacts(job)
    plots = [
        (a.name, PLOT_TITLES.get(Path(a.name).name, Path(a.name).stem))
        for a in artifacts
        if a.name.startswith("plots/") and a.name.endswith(".png")
    ]
    stats = _read_json(service, job, "stats.json")
    metrics = _read_json(service, job, "metrics.json")
    history = metrics.get("history")
    main = [a for a in artifacts if _is_main(a.name)]
    return JobResults(
        artifacts=main,
        other=[a for a in artifacts if not _is_main(a.name)],
        plots=plots,
        cutflow=list(stats.get("cutflow") or []),
        metrics=dict(metrics.get("test") or {}),
        history=history if isinstance(history, list) else [],
    )


def _is_main(name: str) -> bool:
    # The bundle's own files and plots; not checkpoints or caches the run left behind.
    parts = name.split("/")
    return len(parts) == 1 or (len(parts) == 2 and parts[0] == "plots")


def _read_json(service: JobService, job: JobRecord, name: str) -> dict[str, Any]:
    return read_artifact_json(service, job, name)


def log_tail(service: JobService, job: JobRecord, limit: int = LOG_TAIL_BYTES) -> str:
    """The end of the latest attempt's log (empty before the job started)."""
    path = service.log_path(job)
    if path is None or not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(0, 2)
        end = f.tell()
        f.seek(max(0, end - limit))
        data = f.read()
    text = data.decode("utf-8", errors="replace")
    if end > limit:
        text = "…" + text[text.find("\n") + 1 :]
    return text


def curl_snippet(base_url: str, name: str, n_features: int, input_name: str) -> str:
    """A V2 inference request with curl (one row of zeros)."""
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": input_name,
                    "shape": [1, n_features],
                    "datatype": "FP32",
                    "data": [0.0] * n_features,
                }
            ]
        }
    )
    return (
        "export MLAAS4HEP_TOKEN=…   # mlaas4hep token / mlaas4hep login\n"
        f"curl -s -H \"Authorization: Bearer $MLAAS4HEP_TOKEN\" \\\n  -d '{body}' \\\n"
        f"  {base_url}/v2/models/{name}/infer"
    )


def triton_snippet(host: str, name: str, n_features: int, input_name: str) -> str:
    """The same request with the unmodified ``tritonclient[http]``."""
    return (
        "import os\n"
        "import numpy as np\n"
        "import tritonclient.http as triton\n\n"
        f'client = triton.InferenceServerClient("{host}")\n'
        'auth = {"Authorization": f"Bearer {os.environ[\'MLAAS4HEP_TOKEN\']}"}\n'
        f"x = np.zeros((1, {n_features}), dtype=np.float32)  # one row, features in order\n"
        f'features = triton.InferInput("{input_name}", list(x.shape), "FP32")\n'
        "features.set_data_from_numpy(x, binary_data=True)\n"
        f'result = client.infer("{name}", [features], headers=dict(auth))\n'
        "print(result.as_numpy(result.get_response()['outputs'][0]['name']))"
    )
