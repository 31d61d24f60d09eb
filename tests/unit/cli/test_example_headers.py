"""Every ``mlaas4hep`` command in the header comments of examples/*.yaml parses as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from mlaas4hep.cli import build_parser

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def header_commands() -> list[tuple[str, list[str]]]:
    """(example, argv) for each ``#   mlaas4hep ...`` line before the first YAML line."""
    found = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            match = re.match(r"#\s+mlaas4hep (.*)", line)
            if match:
                # the command ends at a shell '&&', a parenthesised remark or a comment
                text = re.split(r"&&|\s{2,}\(", match.group(1))[0]
                found.append((path.name, shlex.split(text, comments=True)))
    return found


COMMANDS = header_commands()


def test_the_headers_name_the_sample_data_step() -> None:
    assert any(argv[0] == "sample-data" for _, argv in COMMANDS)


@pytest.mark.parametrize(("example", "argv"), COMMANDS, ids=[" ".join(a) for _, a in COMMANDS])
def test_header_command_parses(example: str, argv: list[str]) -> None:
    try:
        build_parser(argv).parse_args(argv)
    except SystemExit as exc:  # argparse's way of refusing, e.g. an unknown '-o'
        pytest.fail(f"{example}: `mlaas4hep {' '.join(argv)}` does not parse ({exc})")
