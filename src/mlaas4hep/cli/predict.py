"""``mlaas4hep predict MODEL --input FILE``: score rows with a bundle or a served model.

MODEL a bundle directory (``mlaas4hep run``'s output) and FILE a ROOT file: the bundle's
own preprocessing (selections, defines, cuts, object features) runs locally
(``mlaas4hep.apply``) and one line per event is printed, tab-separated: the identifiers,
the score column(s) and ``<model>_pass`` (scores are ``nan`` where the event fails the
cuts). ``--output`` writes the table to a file instead.

MODEL a model name in the service and FILE a ROOT file: if the published version carries
its preprocessing (a model deployed from a training run), its bundle is fetched
(``mlaas4hep.cli.models_fetch``) and the file is scored locally as above. Otherwise rows
are sent to the service.

The rows come from a JSON file (TFaaS ``{"keys": [...], "values": [...]}``, a list of
rows, a list of ``{feature: value}`` records, or ``{feature: [values...]}`` columns) or
from a ROOT file (``--tree``; the model's ``feature_names`` are read as flat branches,
in bounded chunks). Requests use the V2 binary protocol in batches of ``--batch-size``
rows. Prints (or writes with ``--output``) ``{"model", "model_version", "outputs"}``.

The token comes from ``--token``, ``$MLAAS4HEP_TOKEN`` or the file ``mlaas4hep login``
stores; the service URL from ``--url`` or ``$MLAAS4HEP_URL``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from mlaas4hep.documents import load_json
from mlaas4hep.errors import (
    AuthError,
    DataQualityError,
    Mlaas4hepError,
    NotFound,
    PermissionDenied,
    SpecError,
    closest,
)

DEFAULT_URL = "http://127.0.0.1:8000"
Array = np.ndarray[Any, Any]
#: Rows given as JSON are parsed in memory; bigger inputs belong in a ROOT file.
MAX_JSON_ROWS_BYTES = 256 * 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a bundle directory, or a model name in the service")
    parser.add_argument("--input", required=True, type=Path, help="rows: a .json or .root file")
    parser.add_argument("--version", default=None, help="model version (default: latest)")
    parser.add_argument("--url", default=os.environ.get("MLAAS4HEP_URL", DEFAULT_URL))
    parser.add_argument("--token", default=None, help="bearer token (default: stored token)")
    parser.add_argument("--tree", default=None, help="ROOT tree (default: the only one)")
    parser.add_argument("--batch-size", type=int, default=4096, help="rows per request")
    parser.add_argument("--output", type=Path, default=None, help="write JSON here")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")


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
    from mlaas4hep.cli.models_fetch import fetch_model

    ref = f"{args.model}:{args.version}" if args.version else args.model
    bundle = fetch_model(ref, url=args.url, token=args.token)
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
    try:
        _print_table(chunks, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        # `predict ... | head`: the reader is gone; stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
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
    import httpx

    if args.batch_size < 1:
        msg = f"--batch-size must be positive, got {args.batch_size!r}"
        raise SpecError(msg)
    token = args.token or _stored_token()
    base = f"{args.url.rstrip('/')}/v2/models/{args.model}"
    if args.version:
        base += f"/versions/{args.version}"
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(headers=headers, timeout=args.timeout) as client:
        meta = _call(client, "GET", base).json()
        tensor = meta["inputs"][0]
        features = list(meta.get("parameters", {}).get("feature_names") or [])
        outputs: dict[str, list[Array]] = {}
        version = None
        for rows in read_rows(args.input, features, args.tree, args.batch_size):
            version, result = _infer(client, base, tensor, rows.astype(_dtype(tensor)))
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


def _stored_token() -> str:
    from mlaas4hep.auth.token_store import load_token

    return load_token()


def _dtype(tensor: dict[str, Any]) -> np.dtype[Any]:
    names = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT64": np.int64}
    names |= {"INT32": np.int32}
    if tensor["datatype"] not in names:
        msg = f"input {tensor['name']!r} is {tensor['datatype']}; predict sends {sorted(names)}"
        raise SpecError(msg)
    return np.dtype(names[tensor["datatype"]])


def _infer(
    client: Any, url: str, tensor: dict[str, Any], rows: Array
) -> tuple[str, dict[str, Array]]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": tensor["name"],
                    "shape": list(rows.shape),
                    "datatype": tensor["datatype"],
                    "parameters": {"binary_data_size": rows.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    data = np.ascontiguousarray(rows).astype(rows.dtype.newbyteorder("<")).tobytes()
    response = _call(
        client,
        "POST",
        url + "/infer",
        content=header + data,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    length = int(response.headers.get("Inference-Header-Content-Length", len(response.content)))
    doc = json.loads(response.content[:length])
    offset, result = length, {}
    for out in doc["outputs"]:
        dtype = _dtype(out)
        size = out["parameters"]["binary_data_size"]
        data = response.content[offset : offset + size]
        result[out["name"]] = np.frombuffer(data, dtype.newbyteorder("<")).reshape(out["shape"])
        offset += size
    return str(doc["model_version"]), result


def _call(client: Any, method: str, url: str, **kwargs: Any) -> Any:
    """One HTTP call; transport failures and error answers become project errors."""
    import httpx

    try:
        response = client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        msg = f"cannot reach the inference service at {url!r}: {exc}; check --url"
        raise Mlaas4hepError(msg) from exc
    _raise_for(response)
    return response


def _raise_for(response: Any) -> None:
    if response.status_code < 400:
        return
    try:
        reason = response.json().get("error", response.text)
    except ValueError:
        reason = response.text[:200]
    status = response.status_code
    if status == 401:
        msg = f"the service refused the token ({reason}); run `mlaas4hep login`"
        raise AuthError(msg)
    if status == 403:
        msg = f"not allowed: {reason}"
        raise PermissionDenied(msg)
    if status == 404:
        raise NotFound(reason)
    msg = f"the service answered {status}: {reason}"
    raise Mlaas4hepError(msg)


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
