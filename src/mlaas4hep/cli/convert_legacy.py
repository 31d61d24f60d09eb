"""``mlaas4hep convert-legacy``: turn old MLaaS4HEP inputs into a pipeline spec (YAML).

    mlaas4hep convert-legacy --params params.json [--preproc preproc.json] \\
        --files files.txt --labels labels.txt [--model model.py] -o pipeline.yaml

Relative paths in ``files.txt`` are relative to the directory of ``files.txt`` (as
``@list.txt`` entries of a spec are relative to the list file), not to the current
directory; the spec gets them as paths from the current directory. The first input file
is inspected for branch types, and the first ``--scan-events`` events of each dataset
give the padding length of each jagged collection (``--length`` sets it instead). See
``mlaas4hep.preprocess.legacy`` for how each old key maps.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

from mlaas4hep.preprocess.legacy import convert, read_inputs, schema_from_data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", type=Path, required=True, help="old params.json")
    parser.add_argument("--preproc", type=Path, default=None, help="old preproc.json")
    parser.add_argument("--files", type=Path, required=True, help="files.txt, one file a line "
                        "(relative paths: relative to files.txt's directory)")  # fmt: skip
    parser.add_argument("--labels", type=Path, required=True, help="labels.txt, one a line")
    parser.add_argument("--model", type=Path, default=None, help="Keras model file (model(idim))")
    parser.add_argument("--name", default=None, help="pipeline name (default: params' folder)")
    parser.add_argument("--scan-events", type=int, default=10_000, help="events per dataset "
                        "read to find jagged lengths (0: none; default 10000)")  # fmt: skip
    parser.add_argument("--length", type=int, default=None, help="padding length of jagged")
    parser.add_argument("-o", "--output", type=Path, default=None, help="YAML out (default stdout)")


def run(args: argparse.Namespace) -> int:
    inputs = read_inputs(args.params, args.files, args.labels, args.preproc, args.model)
    if args.name:
        inputs = dataclasses.replace(inputs, name=args.name)
    schema = schema_from_data(inputs, scan_events=args.scan_events, length=args.length)
    text = convert(inputs, schema).to_yaml()
    if args.output is None:
        sys.stdout.write(text)
        return 0
    _write_atomic(args.output, text)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
