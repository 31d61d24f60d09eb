"""Every shell and Python snippet of the documentation runs against a real service.

The snippets of README.md, docs/*.md and the examples' headers run in document order (a
file's shell snippets share their variables), then the commands of a model card the
service generated. What cannot run here is skipped with its reason, and placeholders are
filled in, by the registry in doc_registry.py; see doc_runner.py for the session.
"""

from __future__ import annotations

import pytest
from doc_registry import EPILOGUES, PRELUDES, REWRITES, SKIPS
from doc_runner import REPO, DocsSession, skip_reason
from doc_snippets import Snippet, documentation_snippets, model_card_snippets

pytestmark = pytest.mark.slow
SNIPPETS = documentation_snippets(REPO)
# The README's walk through trains on 100 000 events, submit --wait trains again.
TIMEOUTS = {"README.md#everyday-use:1": 420.0}


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.id for s in SNIPPETS])
def test_snippet_runs(snippet: Snippet, docs_session: DocsSession) -> None:
    for path in next((s.paths for s in SKIPS if s.snippet == snippet.id), ()):
        assert (REPO / path).exists(), f"{snippet.id} names {path}, which does not exist"
    if (reason := skip_reason(snippet)) is not None:
        pytest.skip(reason)
    outcome = docs_session.run(snippet, timeout=TIMEOUTS.get(snippet.id, 300.0))
    assert outcome.ok, outcome.report


def test_model_card_commands_run(docs_session: DocsSession) -> None:
    """The "How to query it" commands of a card the service wrote for a deployed model."""
    snippets = model_card_snippets(docs_session.card)
    assert {s.lang for s in snippets} == {"bash", "python"}, docs_session.card
    ids = {s.id for s in snippets}
    stale = [e.snippet for e in (*REWRITES, *PRELUDES) if e.snippet.startswith("model-card#")]
    assert set(stale) <= ids, f"doc_registry.py names card snippets that are gone: {stale}"
    failures = []
    for snippet in snippets:  # "Locally, from this directory": the bundle's
        outcome = docs_session.run(snippet, timeout=60, cwd=docs_session.card_dir)
        if not outcome.ok:
            failures.append(outcome.report)
    assert not failures, "\n\n".join(failures)


def test_registry_matches_the_docs() -> None:
    """Every registry entry names a snippet that exists: none is left behind by an edit."""
    ids = {s.id for s in SNIPPETS}
    named = {e.snippet for e in (*SKIPS, *REWRITES, *PRELUDES)} | set(EPILOGUES)
    stale = sorted(i for i in named - ids if not i.startswith("model-card#"))
    assert not stale, f"doc_registry.py names snippets that no longer exist: {stale}"
    by_id = {s.id: s for s in SNIPPETS}
    unmatched = [r for r in REWRITES if r.old not in by_id[r.snippet].code]
    assert not unmatched, f"rewrites whose text is no longer in their snippet: {unmatched}"
    assert all(s.reason.strip() for s in SKIPS)
