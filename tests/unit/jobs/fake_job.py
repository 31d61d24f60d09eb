"""A stand-in for `mlaas4hep run SPEC --out DIR --progress-json`, driven by the spec's `fake:`.

`fake:` is a top-level key (tests with a permissive validator) or the spec's `description`
text "fake: {...}" (a real pipeline spec, accepted by the service's validator).
Keys of `fake:` (all optional): steps, sleep (per step), exit (status), message (stderr
line before exiting non-zero), mem_mb (allocate and hold), children (sleepers in the same
group), escape (a sleeper that leaves the group with setsid), probe (try sandbox escapes
and write probe.json), spam (bytes of log), write_big (bytes to one file), open_many
(files held open), plant ({name: base64 bytes} written into the output last), links
({name: target}: symbolic links in the output, made last).
"""

import base64
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

spec = yaml.safe_load(Path(sys.argv[1]).read_text())
out = Path(sys.argv[sys.argv.index("--out") + 1])
fake = spec.get("fake") or {}
if not fake and str(spec.get("description", "")).startswith("fake:"):
    fake = yaml.safe_load(spec["description"])["fake"]  # a real, validated pipeline spec
steps = int(fake.get("steps", 1))
print("fake job starting", flush=True)
for _ in range(int(fake.get("children", 0))):
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
if fake.get("escape"):
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
if fake.get("mem_mb"):
    hold = bytearray(int(fake["mem_mb"]) * 1024 * 1024)
    for j in range(0, len(hold), 4096):
        hold[j] = 1
if fake.get("spam"):
    sys.stderr.write("x" * int(fake["spam"]) + "\n")
if fake.get("open_many"):
    held = [open(sys.argv[1]) for _ in range(int(fake["open_many"]))]  # noqa: SIM115
if fake.get("write_big"):
    (out / "big.bin").write_bytes(b"\0" * int(fake["write_big"]))
for i in range(steps):
    progress = {
        "phase": "train",
        "epoch": i + 1,
        "epochs": steps,
        "events": (i + 1) * 100,
        "total": steps * 100,
        "metrics": {"loss": 1.0 / (i + 1)},
    }
    print(json.dumps(progress), flush=True)
    (out / "partial.txt").write_text(f"step {i}\n")
    time.sleep(float(fake.get("sleep", 0)))
if fake.get("probe"):
    probe = {}
    for name, target in fake["probe"].get("read", {}).items():
        try:
            Path(target).read_bytes()
            probe[f"read:{name}"] = "allowed"
        except OSError as exc:
            probe[f"read:{name}"] = f"refused: {exc.strerror}"
    for name, target in fake["probe"].get("write", {}).items():
        try:
            Path(target).write_text("escaped")
            probe[f"write:{name}"] = "allowed"
        except OSError as exc:
            probe[f"write:{name}"] = f"refused: {exc.strerror}"
    try:
        sock = socket.create_connection(("127.0.0.1", int(fake["probe"].get("port", 9))), 2)
        sock.close()
        probe["socket"] = "allowed"
    except OSError as exc:
        probe["socket"] = f"refused: {exc.strerror}"
    (out / "probe.json").write_text(json.dumps(probe))
code = int(fake.get("exit", 0))
if code:
    print(fake.get("message", "fake failure"), file=sys.stderr, flush=True)
    sys.exit(code)
(out / "model.onnx").write_bytes(b"onnx")
(out / "plots").mkdir()
(out / "plots" / "roc.png").write_bytes(b"png")
(out / "metrics.json").write_text(json.dumps({"auc": 0.9, "name": spec.get("name")}))
for name, content in (fake.get("plant") or {}).items():  # hostile results (base64 bytes)
    (out / name).unlink(missing_ok=True)
    (out / name).write_bytes(base64.b64decode(content))
for name, target in (fake.get("links") or {}).items():  # symbolic links, dangling here
    (out / name).unlink(missing_ok=True)
    (out / name).symlink_to(target)
print("fake job done", flush=True)
