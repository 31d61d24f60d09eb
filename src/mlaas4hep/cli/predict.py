"""``mlaas4hep predict MODEL --input FILE``: score rows with a bundle or a served model.

MODEL a bundle directory (``mlaas4hep run``'s output) and FILE a ROOT file: the bundle's
own preprocessing (selections, defines, cuts, object features) runs locally
(``mlaas4hep.apply``) and one line per event is printed, tab-separated: the identifiers,
the score column(s) and ``<model>_pass`` (scores are ``nan`` where the event fails the
cuts). ``--output`` writes the table to a file instead.

MODEL a model name in the service and FILE a ROOT file: if the published version carries
its preprocessing (a model deployed from a training run), its bundle is fetched
(``mlaas4hep.client.models``) and the file is scored locally as above. Otherwise rows
are sent to the service.

The rows come from a JSON file (TFaaS ``{"keys": [...], "values": [...]}``, a list of
rows, a list of ``{feature: value}`` records, or ``{feature: [values...]}`` columns) or
from a ROOT file (``--tree``; the model's ``feature_names`` are read as flat branches,
in bounded chunks). Requests use the V2 binary protocol in batches of ``--batch-size``
rows. Prints (or writes with ``--output``) ``{"model", "model_version", "outputs"}``.

The service URL and token are found like every command's (:mod:`mlaas4hep.client.http`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from mlaas4hep.cli.client import add_client_arguments, client_from_args
from mlaas4hep.documents import load_json
from mlaas4hep.errors import DataQualityError, SpecError, closest

Array = np.ndarray[Any, Any]
#: Rows given as JSON are parsed in memory; bigger inputs belong in a ROOT file.
MAX_JSON_ROWS_BYTES = 256 * 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a bundle directory, or a model name in the service")
    parser.add_argument("--input", required=True, type=Path, help="rows: a .json or .root file")
    parser.add_argument("--version", default=None, help="model version (default: latest)")
    parser.add_argument("--tree", default=None, help="ROOT tree (default: the only one)")
    parser.add_argument("--batch-size", type=int, default=4096, help="rows per request")
    parser.add_argument("--output", type=Path, default=None, help="write JSON here")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    add_client_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if Path(args.model).expanduser().is_dir():
        return _run_bundle(args, Path(args.model))
    if args.input.suffix.lower() == ".root":
        bundle = _fetch_bundle(args)
        if bundle is not None:
            return _run_bundle(args, bundle)
    return _run_service(args)


def _fetch_bundle(args: argparse.Namespace) -> Path | None:
    """The published bundle of the model NAME, if it carries its preprocessing.

    A ROOT input is scored like with a bundle directory when the service has the model's
    ``features.json`` and ``spec.yaml`` (a model deployed from a training run); a model
    uploaded as bare ONNX has none, and its rows go to the service as flat branches.
    """
    from mlaas4hep.artifact import FEATURES_FILE, SPEC_FILE

    ref = f"{args.model}:{args.version}" if args.version else args.model
    with client_from_args(args) as client:
        bundle = client.fetch_model(ref)
    has_preprocessing = (bundle / FEATURES_FILE).is_file() and (bundle / SPEC_FILE).is_file()
    return bundle if has_preprocessing else None


def _run_bundle(args: argparse.Namespace, bundle: Path) -> int:
    """Score a ROOT file with a bundle's preprocessing; print ids and scores."""
    from mlaas4hep.apply import Model, score_file

    if args.input.suffix.lower() != ".root":
        msg = f"--input {str(args.input)!r}: with a bundle directory, give a .root file"
        raise SpecError(msg)
    model = Model.load(bundle)
    chunks = score_file([model], str(args.input), tree=args.tree)
    if args.output:
        with args.output.open("w", encoding="utf-8") as out:
            _print_table(chunks, out)
        return 0
    _print_table(chunks, sys.stdout)  # `predict ... | head`: cli.main ends it quietly
    return 0


def _print_table(chunks: Iterator[Any], out: TextIO) -> None:
    header = False
    for chunk in chunks:
        names = [*chunk.ids, *chunk.columns]
        if not header:
            out.write("\t".join(names) + "\n")
            header = True
        arrays = [*chunk.ids.values(), *chunk.columns.values()]
        # tolist() keeps integers exact (a uint64 event number never goes through float)
        for row in zip(*(a.tolist() for a in arrays), strict=True):
            out.write("\t".join(map(_cell, row)) + "\n")


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _run_service(args: argparse.Namespace) -> int:
    from mlaas4hep.client import inference

    if args.batch_size < 1:
        msg = f"--batch-size must be positive, got {args.batch_size!r}"
        raise SpecError(msg)
    with client_from_args(args) as client:
        meta = client.model(args.model, args.version)
        tensor = meta["inputs"][0]
        features = list(meta.get("parameters", {}).get("feature_names") or [])
        path = inference.model_path(args.model, args.version)
        outputs: dict[str, list[Array]] = {}
        version = None
        for rows in read_rows(args.input, features, args.tree, args.batch_size):
            data = rows.astype(inference.dtype_of(tensor))
            version, result = inference.infer(
                client, path, {tensor["name"]: (tensor["datatype"], data)}
            )
            for name, array in result.items():
                outputs.setdefault(name, []).append(array)
    doc = {
        "model": args.model,
        "model_version": version,
        "outputs": {k: np.concatenate(v).tolist() for k, v in outputs.items()},
    }
    text = json.dumps(doc)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0


# ---- reading rows ----------------------------------------------------------------------


def read_rows(path: Path, features: Sequence[str], tree: str | None, batch: int) -> Iterator[Array]:
    """Yield row matrices of at most *batch* rows from a .json or .root file."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        rows = load_json(path.read_bytes(), what=repr(str(path)), limit=MAX_JSON_ROWS_BYTES)
        matrix = json_rows(rows, features)
        for start in range(0, len(matrix), batch):
            yield matrix[start : start + batch]
    elif suffix == ".root":
        yield from _root_rows(path, features, tree, batch)
    else:
        msg = f"--input {str(path)!r}: unknown format {suffix!r}; use .json or .root"
        raise SpecError(msg)


def json_rows(doc: Any, features: Sequence[str]) -> Array:
    """A float matrix from the accepted JSON layouts, columns in the model's feature order."""
    if isinstance(doc, dict) and "values" in doc:
        rows = np.asarray(doc["values"], dtype=np.float64)
        rows = rows.reshape(1, -1) if rows.ndim == 1 else rows
        keys = doc.get("keys") or []
        if keys and features and list(keys) != list(features):
            rows = rows[:, [_index(keys, f) for f in features]]
        return rows
    if isinstance(doc, dict):  # columns
        names = list(features) or list(doc)
        return np.column_stack([np.asarray(doc[_need(doc, n)], dtype=np.float64) for n in names])
    if isinstance(doc, list) and doc and isinstance(doc[0], dict):  # records
        names = list(features) or list(doc[0])
        return np.asarray([[r[_need(r, n)] for n in names] for r in doc], dtype=np.float64)
    if isinstance(doc, list):
        rows = np.asarray(doc, dtype=np.float64)
        return rows.reshape(1, -1) if rows.ndim == 1 else rows
    msg = "the JSON input must be {keys, values}, a list of rows, records or columns"
    raise DataQualityError(msg)


def _index(keys: Sequence[str], feature: str) -> int:
    try:
        return list(keys).index(feature)
    except ValueError:
        msg = f"the input has no feature {feature!r}; it has {list(keys)[:10]}..."
        raise DataQualityError(msg) from None


def _need(mapping: dict[str, Any], name: str) -> str:
    if name not in mapping:
        msg = f"the input has no feature {name!r}; " + closest(name, mapping)
        raise DataQualityError(msg)
    return name


def _root_rows(
    path: Path, features: Sequence[str], tree: str | None, batch: int
) -> Iterator[Array]:
    import awkward as ak

    from mlaas4hep.data.schema import inspect_tree
    from mlaas4hep.data.stream import iterate_file

    if not features:
        msg = "the model declares no feature_names, so ROOT branches cannot be chosen; use JSON"
        raise SpecError(msg)
    available = inspect_tree(str(path), tree).names()
    missing = [f for f in features if f not in available]
    if missing:
        shown = ", ".join(map(repr, missing[:5])) + (" ..." if len(missing) > 5 else "")
        msg = (
            f"{str(path)!r} lacks {len(missing)} of the model's {len(features)} input features "
            f"as branches ({shown}): the model needs its preprocessing (defines, object features). "
            "Score the file with the model's bundle: `mlaas4hep predict BUNDLE_DIR --input "
            f"{path}` or `mlaas4hep apply BUNDLE_DIR {path} --out DIR`"
        )
        raise DataQualityError(msg)
    for chunk in iterate_file(str(path), tree, list(features), batch):
        columns = []
        for name in features:
            try:
                columns.append(ak.to_numpy(chunk.arrays[name]).astype(np.float64))
            except ValueError as exc:
                msg = (
                    f"feature {name!r} is not a flat branch in {str(path)!r}; derived or "
                    f"object features need the pipeline's preprocessing (mlaas4hep run)"
                )
                raise DataQualityError(msg) from exc
        yield np.column_stack(columns)
