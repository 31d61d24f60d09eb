"""XRootD origin, forwarding proxy and XCache on 127.0.0.1, from the configs in deploy/xrootd/.

Imported by the ``test_xrootd_*.py`` modules (``from xrootd_servers import ...``). Each
service is Debian's ``xrootd`` started with the same ``deploy/xrootd/*.cfg`` files that
``deploy/xrootd/run.sh`` uses in production, on a free port, as the ``xrootd`` (or
``nobody``) user when the tests run as root. Tests can ``kill()`` and ``start()`` a service
again on the same port. Every process is stopped in teardown, also when a test fails.
The tests are skipped, with the reason printed, only when ``xrootd`` is not installed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlaas4hep.loopback import free_port, give_to_xrootd, listening, xrootd_command

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "xrootd"
HOST = "127.0.0.1"


def make_dir(path: Path, *, owned: bool = False) -> Path:
    """A 0755 directory; ``owned``: writable by the server user too."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return give_to_xrootd(path) if owned else path


class XRootDService:
    """One ``xrootd`` process started from ``deploy/xrootd/<config>``."""

    def __init__(self, name: str, config: str, base: Path, env: dict[str, str]) -> None:
        self.name, self.config = name, DEPLOY / config
        self.port = free_port()
        self.admin = make_dir(base / name, owned=True)
        self.env = {"XRD_PORT": str(self.port), "XRD_ADMIN": str(self.admin), **env}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"root://{HOST}:{self.port}"

    @property
    def log(self) -> Path:
        return self.admin / self.name / "xrootd.log"  # -n NAME puts the log in NAME/

    def start(self) -> XRootDService:
        try:
            cmd = xrootd_command(self.config, self.name, self.admin / "xrootd.log")
        except FileNotFoundError as exc:
            pytest.skip(str(exc))
        except LookupError as exc:
            pytest.fail(str(exc))
        env = os.environ | self.env
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_listening()
        return self

    def _wait_listening(self) -> None:
        assert self.proc is not None
        if listening(self.port, self.proc):
            return
        text = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else "(no log)"
        self.stop()
        pytest.fail(f"{self.name} did not start on port {self.port}:\n{text}")

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-request, like a crashed or unplugged host."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class XRootDStack:
    """An origin serving ``data``, a forwarding proxy and an XCache in front of the origin."""

    origin: XRootDService
    proxy: XRootDService
    xcache: XRootDService
    data: Path
    cache: Path

    def put(self, source: Path, name: str | None = None) -> str:
        """Copy ``source`` into the origin's directory; returns its URL at the origin."""
        target = self.data / (name or source.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        for parent in target.relative_to(self.data).parents:
            (self.data / parent).chmod(0o755)
        shutil.copyfile(source, target)
        target.chmod(0o644)  # the server may run as an unprivileged user
        return f"{self.origin.url}//{target.relative_to(self.data).as_posix()}"

    def services(self) -> list[XRootDService]:
        return [self.xcache, self.proxy, self.origin]


def start_stack(base: Path, *, proxy: bool = True) -> XRootDStack:
    """Start origin, proxy (unless ``proxy=False``) and XCache under ``base``."""
    data = make_dir(base / "data")
    cache = make_dir(base / "cache", owned=True)
    origin = XRootDService("origin", "origin.cfg", base, {"XRD_DATA": str(data)})
    fwd = XRootDService("proxy", "proxy.cfg", base, {"XRD_PERMIT": HOST})
    xcache = XRootDService(
        "xcache",
        "xcache.cfg",
        base,
        {"XRD_ORIGIN": f"{HOST}:{origin.port}", "XRD_CACHE_DIR": str(cache), "XRD_RAM": "1g"},
    )
    stack = XRootDStack(origin, fwd, xcache, data, cache)
    try:
        origin.start()
        if proxy:
            fwd.start()
        xcache.start()
    except BaseException:
        stop_stack(stack)
        raise
    return stack


def stop_stack(stack: XRootDStack) -> None:
    for service in stack.services():
        service.stop()


def new_base(prefix: str) -> Path:
    # Not tmp_path: its directories are 0700 and the server user must read them.
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    return base


@pytest.fixture(scope="module")
def xrootd_stack() -> Iterator[XRootDStack]:
    """Origin + forwarding proxy + XCache shared by a test module (never killed by tests)."""
    base = new_base("mlaas4hep-xrd-stack-")
    try:
        stack = start_stack(base)
        try:
            yield stack
        finally:
            stop_stack(stack)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def own_stack() -> Iterator[XRootDStack]:
    """An origin + XCache of the test's own, which it may kill and restart."""
    base = new_base("mlaas4hep-xrd-own-")
    try:
        stack = start_stack(base, proxy=False)
        try:
            yield stack
        finally:
            stop_stack(stack)
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---- a token-protected origin ------------------------------------------------------------

TEST_ISSUER = "https://issuer.mlaas4hep.test"  # never contacted: its keys are pre-seeded
TEST_AUDIENCE = "mlaas4hep"


@dataclass
class TokenOrigin:
    """``deploy/xrootd/origin-token.cfg``: ztn over TLS, SciTokens authorization."""

    service: XRootDService
    data: Path
    cadir: Path  # the CA that signed the host certificate (clients: X509_CERT_DIR)
    issuer_dir: Path  # a LocalIssuer key directory for TEST_ISSUER

    def put(self, source: Path, name: str | None = None) -> str:
        target = self.data / (name or source.name)
        shutil.copyfile(source, target)
        target.chmod(0o644)
        return f"{self.service.url}//{target.name}"


def scitokens_plugin() -> Path | None:
    for directory in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64"):
        path = Path(directory) / "libXrdAccSciTokens-5.so"
        if path.exists():
            return path
    return None


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_host_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a certificate for 127.0.0.1; returns (cert, key, hashed CA dir)."""
    cadir = make_dir(directory / "ca")
    ca_key, ca_pem = directory / "ca.key", cadir / "ca.pem"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_subject = ("-subj", "/CN=mlaas4hep test CA")
    _openssl("req", "-x509", *ec, *ca_subject, "-keyout", str(ca_key), "-out", str(ca_pem))
    _openssl("rehash", str(cadir))  # the client looks CAs up by subject hash
    key, csr, cert = directory / "host.key", directory / "host.csr", directory / "host.pem"
    _openssl("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_pem), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(ext),
    )  # fmt: skip
    give_to_xrootd(key)  # the key must be the server's own and private
    key.chmod(0o600)
    cert.chmod(0o644)
    return cert, key, cadir


def seed_key_cache(cache_home: Path, issuer: str, jwks: dict[str, object]) -> None:
    """Put the issuer's JWKS in the scitokens key cache, as if fetched over https.

    libscitokens fetches ``<issuer>/.well-known/openid-configuration`` and the JWKS over
    https (the network) and keeps them in ``$XDG_CACHE_HOME/scitokens/scitokens_cpp.sqllite``;
    a fresh, unexpired entry is used without any fetch. Here no issuer is reachable over
    https, so the test writes that entry itself.
    """
    import json
    import sqlite3

    directory = make_dir(cache_home / "scitokens", owned=True)
    make_dir(cache_home, owned=True)
    database = directory / "scitokens_cpp.sqllite"
    later = int(time.time()) + 24 * 3600
    entry = json.dumps({"jwks": jwks, "expires": later, "next_update": later})
    with sqlite3.connect(database) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS keycache "
            "(issuer text UNIQUE PRIMARY KEY NOT NULL, keys text NOT NULL)"
        )
        db.execute("INSERT OR REPLACE INTO keycache VALUES (?, ?)", (issuer, entry))
    db.close()
    give_to_xrootd(database)


@pytest.fixture(scope="module")
def token_origin() -> Iterator[TokenOrigin]:
    if scitokens_plugin() is None:
        pytest.skip("libXrdAccSciTokens not found; install Debian 'xrootd-scitokens-plugins'")
    if shutil.which("openssl") is None:
        pytest.skip("openssl not found (makes the test CA); install Debian 'openssl'")
    from mlaas4hep.auth.local_issuer import LocalIssuer

    base = new_base("mlaas4hep-xrd-token-")
    try:
        data = make_dir(base / "data")
        cert, key, cadir = make_host_cert(make_dir(base / "tls"))
        issuer_dir = base / "issuer"
        issuer = LocalIssuer(issuer_dir, audience=TEST_AUDIENCE, issuer=TEST_ISSUER)
        seed_key_cache(base / "cache", TEST_ISSUER, issuer.jwks())
        scitokens = base / "scitokens.cfg"
        scitokens.write_text(
            f"[Global]\naudience = {TEST_AUDIENCE}\n\n"
            f"[Issuer mlaas4hep-test]\nissuer = {TEST_ISSUER}\nbase_path = /\n"
        )
        env = {
            "XRD_DATA": str(data),
            "XRD_TLS_CERT": str(cert),
            "XRD_TLS_KEY": str(key),
            "XRD_TLS_CADIR": str(cadir),
            "XRD_SCITOKENS": str(scitokens),
            "XDG_CACHE_HOME": str(base / "cache"),
        }
        service = XRootDService("token-origin", "origin-token.cfg", base, env)
        try:
            service.start()
            yield TokenOrigin(service, data, cadir, issuer_dir)
        finally:
            service.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
