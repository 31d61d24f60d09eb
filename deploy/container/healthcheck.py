"""Container health check: exit 0 when the service in this container answers its probe.

Tries the job API's ``/healthz``, then the inference service's ``/v2/health/live``, on
``127.0.0.1:$MLAAS4HEP_PORT`` (default 8000). Standard library only; no shell.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

PATHS = ("/healthz", "/v2/health/live")


def main() -> int:
    port = int(os.environ.get("MLAAS4HEP_PORT", "8000"))
    for path in PATHS:
        try:
            url = f"http://127.0.0.1:{port}{path}"
            with urllib.request.urlopen(url, timeout=4) as response:
                if response.status == 200:
                    return 0
        except (urllib.error.URLError, OSError):
            continue
    print(f"no 200 from 127.0.0.1:{port}{' or '.join(PATHS)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
