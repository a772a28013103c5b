"""The seccomp filter of every capsule process, in the OCI runtime spec's format (runc compiles it).

A deny list over an allow-by-default filter: the calls below fail with EPERM inside a capsule.
They are the usual ways out of a container, or into the kernel's less-travelled code: keys,
kernel modules and BPF, mounts and new namespaces (a nested user namespace would give the
capsule fresh capabilities), handles to host files, clocks, swap, reboot and the kernel log.
`ptrace` stays allowed: the pid namespace and the capsule's own uid range already keep every
process outside the capsule out of reach, and debuggers inside are legitimate.
"""

from __future__ import annotations

import errno
import platform
from typing import Any

CLONE_NEWUSER = 0x10000000

DENIED = (
    # Kernel keyrings: shared across containers of one uid on older kernels.
    "add_key",
    "keyctl",
    "request_key",
    # Kernel code and tracing.
    "bpf",
    "perf_event_open",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "lookup_dcookie",
    "iopl",
    "ioperm",
    # Mounts and namespaces.
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "unshare",
    "setns",
    # Host files by handle (the "shocker" escape).
    "open_by_handle_at",
    "name_to_handle_at",
    # Host-wide state.
    "swapon",
    "swapoff",
    "reboot",
    "syslog",
    "acct",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "quotactl",
    "nfsservctl",
    "vhangup",
    "uselib",
    "userfaultfd",
)

_ARCHITECTURES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}


def profile() -> dict[str, Any]:
    """The `linux.seccomp` section of a capsule's config.json."""
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": _ARCHITECTURES.get(platform.machine(), []),
        "syscalls": [
            {"names": list(DENIED), "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
            # No new user namespace by clone(2) either.
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": errno.EPERM,
                "args": [
                    {
                        "index": 0,
                        "value": CLONE_NEWUSER,
                        "valueTwo": CLONE_NEWUSER,
                        "op": "SCMP_CMP_MASKED_EQ",
                    }
                ],
            },
            # clone3 passes its flags in memory, out of a filter's sight: ENOSYS makes the C
            # library fall back to clone(2), which the rule above checks.
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
        ],
    }
