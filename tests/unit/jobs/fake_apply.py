"""A stand-in for `mlaas4hep apply MODEL_DIR INPUTS... --out DIR ... --progress-json`.

Checks what the real command would see in the sandbox: the model bundle (``model.onnx``
readable in MODEL_DIR) and each input's first bytes. For each input ``<stem>.root`` it
writes ``<stem>.<model dir name>.friend.<format>``: for ``root``, a copy of the input (a
real ROOT file, so registering it as a dataset works); for ``parquet``, JSON describing
what it saw. ``argv.json`` in the output holds the argv it got. ``--tree Slow`` makes it
print progress and sleep for a minute (a job to cancel); ``--tree Fail`` exits 2 with a
one-line error naming the first input, like the real command.
"""

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("inputs", nargs="+")
parser.add_argument("--out", required=True)
parser.add_argument("--format", default="root")
parser.add_argument("--tree")
parser.add_argument("--only-passing", action="store_true")
parser.add_argument("--step-size", type=int)
parser.add_argument("--progress-json", action="store_true")
args = parser.parse_args()
out, model = Path(args.out), Path(args.model)
(out / "argv.json").write_text(json.dumps(sys.argv[1:]))
onnx_digest = hashlib.sha256((model / "model.onnx").read_bytes()).hexdigest()
if args.tree == "Fail":
    print(f"DataSourceError: {args.inputs[0]!r} is truncated", file=sys.stderr, flush=True)
    sys.exit(2)
for i, source in enumerate(args.inputs):
    data = Path(source).read_bytes()
    target = out / f"{Path(source).stem}.{model.name}.friend.{args.format}"
    if args.format == "root":
        target.write_bytes(data)
    else:
        seen = {"model": model.name, "onnx_sha256": onnx_digest, "head": data[:4].hex()}
        target.write_text(json.dumps(seen))
    progress = {"phase": "apply", "events": (i + 1) * 100, "total": len(args.inputs) * 100}
    print(json.dumps(progress), flush=True)
if args.tree == "Slow":
    for _ in range(600):
        print(json.dumps({"phase": "apply", "message": "slow"}), flush=True)
        time.sleep(0.1)
