"""The job's seccomp filter: a classic BPF program, built here byte by byte.

The filter follows the spirit of Docker's and Kubernetes' ``RuntimeDefault`` profile, as a
deny list of the calls a batch job never needs and an escape always starts with:

* the architecture must be the one this service runs on (anything else, including the
  x32 ABI on x86_64, is killed or refused: a 32-bit call table would bypass the list);
* mounts (old and new API), ``pivot_root``, ``chroot``, ``mknod``, namespaces (``unshare``,
  ``setns``, ``clone`` with any ``CLONE_NEW*`` flag), ``ptrace`` and cross-process memory
  or descriptor access (``pidfd_getfd``), the kernel log, modules, ``kexec``, BPF, perf
  events, keyrings, ``userfaultfd``, ``io_uring`` (as containerd's default profile), file
  handles (``open_by_handle_at`` escapes a bind mount), ``acct``, swap and ``reboot``
  answer ``EPERM``;
* ``clone3`` answers ``ENOSYS``: its flags live in memory a filter cannot read, and libc
  then falls back to ``clone``, whose flags the filter checks.

bwrap loads the program (``--seccomp FD``) right before it executes the job command, after
its own mounts, so the sandbox set-up is unaffected. :func:`program` is pure.
"""

from __future__ import annotations

import errno
import platform
import struct

from mlaas4hep.errors import SpecError

# struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06

_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000

# struct seccomp_data { int nr; u32 arch; u64 instruction_pointer; u64 args[6]; }
_OFF_NR, _OFF_ARCH, _OFF_ARG0_LO = 0, 4, 16  # args are little-endian on both arches

_X32_BIT = 0x40000000
#: CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
#: | CLONE_NEWNET (CLONE_NEWTIME shares clone()'s exit-signal byte; unshare covers it).
CLONE_NEW_MASK = 0x7E020000

_DENIED = (
    "mount", "umount2", "pivot_root", "chroot", "mknod", "mknodat", "ptrace",
    "process_vm_readv", "process_vm_writev", "unshare", "setns", "syslog", "kexec_load",
    "kexec_file_load", "init_module", "finit_module", "delete_module", "bpf",
    "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd",
    "open_by_handle_at", "name_to_handle_at", "acct", "swapon", "swapoff", "reboot",
    "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "pidfd_getfd",
)  # fmt: skip

_X86_64 = {
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "mknod": 133,
    "mknodat": 259, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
    "unshare": 272, "setns": 308, "syslog": 103, "kexec_load": 246, "kexec_file_load": 320,
    "init_module": 175, "finit_module": 313, "delete_module": 176, "bpf": 321,
    "perf_event_open": 298, "keyctl": 250, "add_key": 248, "request_key": 249,
    "userfaultfd": 323, "open_by_handle_at": 304, "name_to_handle_at": 303, "acct": 163,
    "swapon": 167, "swapoff": 168, "reboot": 169, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "pidfd_getfd": 438,
    "clone": 56, "clone3": 435,
}  # fmt: skip
_AARCH64 = {  # the generic table: no mknod
    "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "mknodat": 33,
    "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "unshare": 97,
    "setns": 268, "syslog": 116, "kexec_load": 104, "kexec_file_load": 294,
    "init_module": 105, "finit_module": 273, "delete_module": 106, "bpf": 280,
    "perf_event_open": 241, "keyctl": 219, "add_key": 217, "request_key": 218,
    "userfaultfd": 282, "open_by_handle_at": 265, "name_to_handle_at": 264, "acct": 89,
    "swapon": 224, "swapoff": 225, "reboot": 142, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "pidfd_getfd": 438,
    "clone": 220, "clone3": 435,
}  # fmt: skip
#: machine name -> (AUDIT_ARCH_*, syscall table, has the x32 ABI)
ARCHES: dict[str, tuple[int, dict[str, int], bool]] = {
    "x86_64": (0xC000003E, _X86_64, True),
    "aarch64": (0xC00000B7, _AARCH64, False),
}


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def program(machine: str | None = None) -> bytes:
    """The filter for *machine* (default: this host's) as ``struct sock_filter`` bytes.

    Raises:
        SpecError: no syscall table for the machine (only x86_64 and aarch64 are known).
    """
    machine = machine or platform.machine()
    if machine not in ARCHES:
        msg = (
            f"no seccomp filter for machine {machine!r} (known: {', '.join(ARCHES)}); "
            "run the executor on one of those"
        )
        raise SpecError(msg)
    audit_arch, table, x32 = ARCHES[machine]
    denied = [table[name] for name in _DENIED if name in table]
    # Body first, with symbolic targets; the three returns come last.
    body: list[tuple[int, int, str | None, str | None]] = [
        (_LD_W_ABS, _OFF_ARCH, None, None),
        (_JEQ_K, audit_arch, None, "kill"),
        (_LD_W_ABS, _OFF_NR, None, None),
    ]
    if x32:
        body.append((_JGE_K, _X32_BIT, "eperm", None))
    body += [(_JEQ_K, nr, "eperm", None) for nr in denied]
    body.append((_JEQ_K, table["clone3"], "enosys", None))
    body.append((_JEQ_K, table["clone"], None, "allow"))
    body.append((_LD_W_ABS, _OFF_ARG0_LO, None, None))
    body.append((_JSET_K, CLONE_NEW_MASK, "eperm", "allow"))
    returns = {
        "allow": _RET_ALLOW,
        "eperm": _RET_ERRNO | errno.EPERM,
        "enosys": _RET_ERRNO | errno.ENOSYS,
        "kill": _RET_KILL_PROCESS,
    }
    where = {label: len(body) + i for i, label in enumerate(returns)}
    out = bytearray()
    for pc, (code, k, jt, jf) in enumerate(body):
        t = where[jt] - pc - 1 if jt else 0
        f = where[jf] - pc - 1 if jf else 0
        out += _insn(code, k, t, f)
    for value in returns.values():
        out += _insn(_RET_K, value)
    return bytes(out)
