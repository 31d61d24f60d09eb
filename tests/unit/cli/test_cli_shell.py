"""The CLI as a shell sees it: grouped help with examples, lazy imports, completion
scripts, and a reader that closes the pipe early (``| head -1``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlaas4hep.cli import COMMANDS, EXAMPLES, GROUPS, main
from mlaas4hep.cli.completion import SHELLS, script

HERE = Path(__file__).parent


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_every_command_is_in_exactly_one_group() -> None:
    grouped = [name for _, names in GROUPS for name in names]
    assert sorted(grouped) == sorted(COMMANDS)
    assert set(EXAMPLES) <= set(COMMANDS)


def test_top_help_lists_the_commands_by_group_with_examples(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = _help(capsys)
    titles = ["Local pipeline:", "Service:", "Inference:", "Set-up:", "Examples:"]
    positions = [out.index(t) for t in titles]
    assert positions == sorted(positions)
    service = out[out.index("Service:") : out.index("Inference:")]
    for name in ("submit", "status", "wait", "jobs", "logs", "cancel", "download", "models"):
        assert f"\n  {name} " in service
    assert "mlaas4hep submit examples/tth-vs-qcd.yaml --wait" in out
    assert max(len(line) for line in out.splitlines()) <= 100


@pytest.mark.parametrize("command", ["status", "wait", "jobs", "download", "completion"])
def test_command_help_ends_with_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(capsys, command)
    assert out.index("Examples:") > out.index("options:")
    assert f"mlaas4hep {command}" in out.split("Examples:")[1]


def test_models_help_shows_its_actions(capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(capsys, "models")
    assert out.startswith("usage: mlaas4hep models ")
    for action in ("list", "show", "rm"):
        assert f"    {action} " in out
    assert "--yes" in _help(capsys, "models", "rm")


def test_help_and_inspect_import_no_heavy_module() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from mlaas4hep.cli import main\n"
        "for argv in (['--help'], ['inspect', '--help'], ['status', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "print(sorted(m for m in ('torch', 'xgboost', 'sklearn', 'fastapi') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bash_completion_is_valid_and_completes(tmp_path: Path) -> None:
    path = tmp_path / "mlaas4hep.bash"
    path.write_text(script("bash"))
    subprocess.run(["bash", "-n", str(path)], check=True)

    def complete(*words: str) -> list[str]:
        array = " ".join(f"'{w}'" for w in ("mlaas4hep", *words))
        code = (
            f"source {path}; COMP_WORDS=({array}); COMP_CWORD={len(words)}; "
            "_mlaas4hep; printf '%s\\n' \"${COMPREPLY[@]}\""
        )
        run = subprocess.run(["bash", "-c", code], capture_output=True, text=True, check=True)
        return run.stdout.split()

    assert complete("st") == ["stats", "status"]
    models = ["list", "show", "rm", "aliases", "promote", "rollback", "policy"]
    assert complete("models", "") == models
    assert "--yes" in complete("models", "rm", "--")
    assert complete("jobs", "--state", "su") == ["succeeded"]
    assert complete("completion", "") == list(SHELLS)
    assert "--json" in complete("wait", "JOB", "--")


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_name_every_command(shell: str, tmp_path: Path) -> None:
    text = script(shell)
    for name in COMMANDS:
        assert name in text
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed here: the script's syntax is not checked")
    path = tmp_path / f"mlaas4hep.{shell}"
    path.write_text(text)
    subprocess.run([shell, "-n", str(path)], check=True)


@pytest.mark.parametrize("mode", ["print", "bytes", "rich"])
def test_a_reader_that_stops_early_ends_the_command_quietly(mode: str) -> None:
    """``mlaas4hep ... | head -1``: no BrokenPipeError traceback, exit status 0."""
    code = (
        f"import sys; sys.path.insert(0, {str(HERE)!r})\n"
        "from mlaas4hep import cli\n"
        "cli.COMMANDS['spam'] = ('spam_command', 'test output')\n"
        f"sys.exit(cli.main(['spam', {mode!r}]))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stdout.readline()  # what `head -1` reads, then it is gone
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert err.decode() == ""
    assert proc.returncode == 0


def test_completion_through_head_is_quiet() -> None:
    command = f"set -o pipefail; {sys.executable} -m mlaas4hep.cli completion fish | head -1"
    run = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=True)
    assert run.stdout.startswith("# fish completion")
    assert run.stderr == ""
