"""What the documentation tests do with each snippet besides running it as written.

Kept here, in the tests, not in the docs. Three kinds of entries, each with its reason:

- ``SKIPS``: snippets that cannot run here (a container engine, a cluster, a remote host, a
  test-suite run inside the test suite). ``paths`` are still checked to exist in the
  repository, so a skipped command cannot name a file that is gone.
- ``REWRITES``: a literal placeholder the reader is meant to fill in (a job id ``3f2c…e1``,
  elided values ``...``, an example host) replaced by the real value of the test session.
- ``PRELUDES``: code run before a snippet to bind what the text leaves to the reader (the
  ``$ID`` of "your job", ``auth`` in a Python snippet).

``READER_FILES`` are the files the docs assume the reader has (``pipeline.yaml``,
``nano.root``, ...); the session makes them in its working directory.

Every entry must still match its snippet (``test_registry_matches_the_docs``): when a doc
changes, the entry is updated or dropped, never left to hide a snippet.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

N_FEATURES = 36  # the tth-vs-qcd example's features (see the session's model card)


def _values(n: int) -> str:
    return ", ".join(["0.1"] * n)


def _as_in_shape(code: str) -> str:
    """As many values as the snippet's own ``"shape": [1, N]`` says."""
    m = re.search(r'"shape": \[1, (\d+)\]', code)
    return f"[{_values(int(m.group(1)) if m else N_FEATURES)}]"


def _imports(module: str, attribute: str) -> bool:
    """Whether *module* imports here and has *attribute* (in a child: no import side effects)."""
    code = f"import {module}; {module}.{attribute}"
    return (
        subprocess.run([sys.executable, "-c", code], capture_output=True, check=False).returncode
        == 0
    )


@dataclass(frozen=True)
class Skip:
    snippet: str
    reason: str
    paths: tuple[str, ...] = ()  # repository paths the snippet names; checked to exist
    unless: Callable[[], bool] | None = None  # run it after all when this says True


@dataclass(frozen=True)
class Rewrite:
    snippet: str
    old: str  # literal text of the snippet
    # The text ("{version}": the served version of tth-classifier), or made from the code.
    new: str | Callable[[str], str]
    reason: str


@dataclass(frozen=True)
class Prelude:
    snippet: str
    code: str
    reason: str


_SUITE = "a run of part of the test suite; `make test` runs it (not nested in itself)"

SKIPS: tuple[Skip, ...] = (
    Skip(
        "README.md#two-commands:1",
        "`make demo` is run by test_readme_walkthrough.py in a fresh clone; `make test` runs "
        "the whole suite, this test included",
        paths=("Makefile",),
    ),
    Skip(
        "README.md#everyday-use:1",
        "run as written, in order, in a fresh clone by test_readme_walkthrough.py (it trains "
        "on 100 000 events twice: not repeated here)",
    ),
    Skip(
        "docs/benchmarks.md#job-sandbox-start-up-overhead-benchsandboxpy:1",
        "a benchmark (minutes of CPU); `make test` runs every benchmark's smoke mode",
        paths=("bench/sandbox.py",),
    ),
    Skip(
        "docs/benchmarks.md#applying-a-model-mlaas4hep-apply-vs-the-bare-work-benchapplypy:1",
        "a benchmark (~2 min, a 2 GB file); `make test` runs every benchmark's smoke mode",
        paths=("bench/apply.py",),
    ),
    Skip(
        "docs/deployment.md#single-host:1",
        "the README's `make demo` and `mlaas4hep serve`, run by test_readme_walkthrough.py",
    ),
    Skip(
        "docs/deployment.md#the-image-deploycontainerdockerfile:1",
        "needs a Docker daemon and the network to build an image",
        paths=("deploy/container/Dockerfile",),
    ),
    Skip(
        "docs/deployment.md#the-image-deploycontainerdockerfile:2",
        "needs a Docker daemon, the built image and a Dask scheduler host",
    ),
    Skip(
        "docs/deployment.md#docker-compose-deploycomposecomposeyaml:1",
        "needs Docker Compose, a Docker daemon and the network to build images",
        paths=("deploy/compose",),
    ),
    Skip(
        "docs/deployment.md#kubernetes-deployk8s:1",
        "needs a Kubernetes cluster",
        paths=("deploy/k8s",),
    ),
    Skip(
        "docs/inference.md#applying-a-model-to-root-files:2",
        "needs PyROOT (the `root` wheel or a ROOT installation), which is not installed",
        unless=lambda: _imports("ROOT", "TFile"),
    ),
    Skip(
        "docs/inference.md#embedding-and-running:1",
        "a sketch of the embedding API: repo, authenticator, policy, raw_section, settings "
        "and model_policy are the caller's objects (tests/integration/conftest_serve.py "
        "embeds it for real)",
    ),
    Skip(
        "docs/reliability.md#reliability-what-the-hardening-suite-shows:1",
        f"the hardening suite (minutes): {_SUITE}",
        paths=("tests/hardening",),
    ),
    Skip(
        "docs/security.md#hostile-documents-and-tokens:1",
        _SUITE,
        paths=(
            "tests/security/test_documents_tokens.py",
            "tests/unit/spec/test_documents.py",
            "tests/unit/auth",
        ),
    ),
    Skip(
        "docs/security.md#the-web-ui:1",
        _SUITE,
        paths=("tests/security/test_ui.py", "tests/unit/api/test_ui_trust.py"),
    ),
    Skip(
        "docs/security.md#submission-policy-and-inputs:1",
        _SUITE,
        paths=(
            "tests/security/test_submission.py",
            "tests/unit/data/test_inputs.py",
            "tests/unit/jobs/test_submission_policy.py",
        ),
    ),
    Skip(
        "docs/security.md#the-job-sandbox:1",
        _SUITE,
        paths=(
            "tests/unit/jobs/test_sandbox_parts.py",
            "tests/unit/jobs/test_sandbox_executor.py",
            "tests/security/test_sandbox.py",
        ),
    ),
    Skip(
        "docs/service.md#configuration:1",
        "needs a PostgreSQL server (the integration suite starts one: tests/integration/pg.py)",
    ),
)

_SERVE = "the service is the test session's `mlaas4hep serve`, started before the snippets"
_TFAAS_COPY = (
    "uploads and deletes a model: done as tth-tfaas (from tth-tfaas/model.onnx, metadata.json), "
    "so the page's later snippets still find tth-classifier"
)
_JOB_ID = "`3f2c…e1` stands for the reader's job id: the newest job of the session"

REWRITES: tuple[Rewrite, ...] = (
    Rewrite("docs/service.md#quick-start:1", "mlaas4hep serve ", ": mlaas4hep serve ", _SERVE),
    Rewrite("docs/service.md#quick-start:1", "logs 3f2c…e1", 'logs "$(docs_job)"', _JOB_ID),
    Rewrite(
        "docs/service.md#quick-start:1",
        "download 3f2c…e1",
        'download "$(docs_job succeeded ttH-vs-QCD)"',
        _JOB_ID + " that succeeded",
    ),
    Rewrite(
        "docs/service.md#quick-start:1",
        "cancel 3f2c…e1",
        'cancel "$(docs_spare_job)"',
        "`3f2c…e1` stands for a job to cancel: a queued job submitted for it",
    ),
    Rewrite(
        "docs/inference.md#curl:1",
        "[0.1, 0.2, 0.3, ...]",
        _as_in_shape,
        "the doc elides the feature values: as many as its shape says",
    ),
    Rewrite(
        "docs/inference.md#legacy-tfaas-api:1",
        '"keys": ["f0","f1",...], "values": [0.1, 0.2, ...]',
        f'"values": [{_values(N_FEATURES)}]',
        f"the doc elides the names and values: the {N_FEATURES} values in model order, no keys",
    ),
    *(
        Rewrite("docs/inference.md#legacy-tfaas-api:1", old, new, _TFAAS_COPY)
        for old, new in (
            ("-F name=tth-classifier", "-F name=tth-tfaas"),
            ("tar czf model.tar.gz tth-classifier/", "tar czf model.tar.gz tth-tfaas/"),
            ("-F model=tth-classifier", "-F model=tth-tfaas"),
        )
    ),
    Rewrite(
        "docs/inference.md#mlaas4hep-predict:1",
        " [--version 3] [--output scores.json]",
        " --version {version} --output scores.json",
        "[...] marks optional arguments; version 3 is an example: the served version",
    ),
    Rewrite(
        "docs/inference.md#applying-a-model-to-root-files:1",
        "root://eos.example//store/user/a/data_*.root",
        "",
        "eos.example is a remote XRootD host (tests/integration/test_xrootd_*.py read root://)",
    ),
    Rewrite(
        "docs/inference.md#applying-a-model-to-root-files:1",
        "[--format root|parquet] [--only-passing] [--step-size N] \\\n"
        "    [--tree Events] [--model runs/other ...] [--no-ids] [--progress-json]",
        "--format root --step-size 5000 \\\n    --tree Events --progress-json",
        "[...] marks optional arguments: those the joining example below needs (ROOT friends "
        "with identifiers, every entry); parquet, --only-passing, --no-ids and --model are "
        "run by tests/integration/test_apply.py",
    ),
    Rewrite(
        "examples/tth-vs-qcd.yaml#header:1",
        "--out runs/tth",
        "--out runs/tth-example",
        "runs/tth already holds the session's run (the README's, downloaded by the setup); "
        "`mlaas4hep run` refuses to overwrite a run, as it should",
    ),
    Rewrite(
        "docs/inference.md#applying-a-model-to-root-files:4",
        "https://mlaas.example MLAAS4HEP_TOKEN=...",
        '"$MLAAS4HEP_DOCS_URL" MLAAS4HEP_TOKEN="$(mlaas4hep token --user alice)"',
        "mlaas.example and `...` stand for the reader's service and token: the session's",
    ),
    Rewrite(
        "docs/inference.md#applying-a-model-to-root-files:4",
        "tth-classifier:3",
        "tth-classifier:{version}",
        "version 3 is an example: the served version",
    ),
    Rewrite(
        "docs/inference.md#applying-a-model-to-root-files:5",
        "tth-classifier:3",
        "tth-classifier:{version}",
        "version 3 is an example: the served version",
    ),
    Rewrite(
        "docs/service.md#follow-get-jobs-get-jobsid-get-jobsidlogs:1",
        "cursor=<next_cursor>",
        "cursor=$(docs_next_cursor)",
        "<next_cursor> is the next_cursor of a previous page",
    ),
    Rewrite(
        "docs/service.md#applying-a-model-as-a-job:1",
        "$ID",
        "$(docs_job succeeded score-ttH)",
        "$ID is the reader's apply job: the newest that succeeded",
    ),
    Rewrite(
        "docs/service.md#datasets:2",
        'curl -sS -H "$AUTH" "$URL/datasets/uploads/$H"',
        'command -p curl -sS -H "$AUTH" "$URL/datasets/uploads/$H"',
        "a 404 is a documented answer here (no partial upload: start at 0): plain curl, "
        "without the harness's --fail-with-body",
    ),
    Rewrite(
        "docs/service.md#datasets:1",
        "list [--json]",
        "list --json",
        "[...] marks an optional argument: taken",
    ),
)

PRELUDES: tuple[Prelude, ...] = (
    Prelude(
        "model-card#how-to-query-it:1",
        "export TOKEN=$(mlaas4hep token --user alice)\n",
        "the card's own words: a token in `$TOKEN`, e.g. `export TOKEN=$(mlaas4hep token ...)`",
    ),
    Prelude(
        "docs/inference.md#python-tritonclient:1",
        "import os, subprocess\n"
        'os.environ["MLAAS4HEP_TOKEN"] = subprocess.check_output(\n'
        '    ["mlaas4hep", "token", "--user", "alice"], text=True).strip()\n',
        "the snippet's comment: export MLAAS4HEP_TOKEN=$(mlaas4hep token --user alice)",
    ),
    Prelude(
        "docs/inference.md#model-registry:2",
        "import os, subprocess\n"
        'os.environ["MLAAS4HEP_TOKEN"] = subprocess.check_output(\n'
        '    ["mlaas4hep", "token", "--user", "alice"], text=True).strip()\n',
        "the token the page's tritonclient snippets take from $MLAAS4HEP_TOKEN",
    ),
    Prelude(
        "docs/inference.md#legacy-tfaas-api:1",
        "mkdir -p tth-tfaas && cp model.onnx metadata.json tth-tfaas/\n",
        "the reader's model directory for the tarball upload",
    ),
    Prelude(
        "docs/service.md#follow-get-jobs-get-jobsid-get-jobsidlogs:1",
        "ID=$(docs_job)\n",
        "$ID is the reader's job: the newest job of the session",
    ),
    Prelude(
        "docs/service.md#cancel-and-delete:1",
        "ID=$(docs_spare_job)\n",
        "$ID is a job to cancel: a queued job submitted for it",
    ),
    Prelude(
        "docs/service.md#artifacts:1",
        "ID=$(docs_job succeeded ttH-vs-QCD)\n",
        "$ID is a training job that succeeded (artifacts exist only then)",
    ),
    Prelude(
        "docs/training.md#python-your-own-pytorch-or-keras-model-opt-in:2",
        'import os\nos.environ.setdefault("KERAS_BACKEND", "torch")\n',
        "mlaas4hep imports the file with Keras on its torch backend (TensorFlow is not used)",
    ),
)

#: Snippets whose definitions mlaas4hep calls: the call is appended, as mlaas4hep makes it.
EPILOGUES: dict[str, str] = {
    "docs/training.md#python-your-own-pytorch-or-keras-model-opt-in:1": "build_model(8, 1)\n",
    "docs/training.md#python-your-own-pytorch-or-keras-model-opt-in:2": "model(8)\n",
}
