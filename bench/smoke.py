"""Run every benchmark script in bench/ once in its quick ``--smoke`` mode.

CI does not measure performance (the machine is shared and noisy); it only checks that
each benchmark still runs end to end and prints one JSON object.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    failed = []
    for script in sorted(HERE.glob("*.py")):
        if script.name.startswith("_") or script.name == "smoke.py":
            continue
        cmd = [sys.executable, str(script), "--json", "--smoke"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        lines = proc.stdout.strip().splitlines()
        try:
            result = json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError:
            result = None
        ok = proc.returncode == 0 and isinstance(result, dict)
        print(f"bench smoke {script.name}: {'ok' if ok else 'FAILED'} {result if ok else ''}")
        if not ok:
            failed.append(script.name)
            print(proc.stdout[-2000:], proc.stderr[-4000:], sep="\n", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
