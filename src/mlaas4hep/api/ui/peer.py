"""Who is on the other end of a loopback TCP connection: the owner uid of the peer socket.

Local sign-in mints a token for the account running the service, so it must only answer
that account, not every process that can reach 127.0.0.1: another user on a shared host,
or a sandboxed job with the host's network (jobs with remote inputs), which runs as a slot
uid. Like ``SO_PEERCRED`` on a Unix socket or identd on TCP, the kernel says who owns the
client socket: its row in ``/proc/net/tcp`` (``tcp6``) of this network namespace carries
the uid. A service in a user namespace sees the uids as mapped there.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
_ESTABLISHED = "01"


def peer_uid(client: tuple[str, int], server: tuple[str, int]) -> int | None:
    """The uid owning the socket at *client* connected to *server*; None if not found."""
    want_local, want_remote = _key(*client), _key(*server)
    for table in _TABLES:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 8 or fields[3] != _ESTABLISHED:
                continue
            if _parse(fields[1]) == want_local and _parse(fields[2]) == want_remote:
                return int(fields[7])
    return None


def _key(host: str, port: int) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address, port


def _parse(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int] | None:
    """``0100007F:1F90`` / 32 hex digits of an IPv6 address, each 32-bit word in host order."""
    try:
        addr_hex, port_hex = text.split(":")
        raw = bytes.fromhex(addr_hex)
        words = [raw[i : i + 4] for i in range(0, len(raw), 4)]
        packed = b"".join(
            int.from_bytes(w, "little").to_bytes(4, "big") if _little() else w for w in words
        )
        if len(packed) == 4:
            return ipaddress.IPv4Address(packed), int(port_hex, 16)
        return _key(socket.inet_ntop(socket.AF_INET6, packed), int(port_hex, 16))
    except ValueError:
        return None


def _little() -> bool:
    import sys

    return sys.byteorder == "little"
