"""What the kernel asks on its own, apart from the workload: the report summarises it in one line.

The kernel forgets inodes it no longer caches (``forget``), and before every
write it asks for ``security.capability`` to know whether to drop file
capabilities, a probe answered ENODATA on almost every file.  Neither is
anything the application did, so neither belongs in the charts and tables
of its operations.  Metrics carry no xattr name, so a probe is recognised
as names.py's expected failure of ``getxattr`` (``EXPECTED_FAILURES``), the
same way in metrics and in spans.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..names import EXPECTED_FAILURES, OpName


@dataclass(frozen=True)
class Housekeeping:
    """One kind of kernel housekeeping: its operation, the error it is answered with (or any), in words."""

    operation: str
    error_type: str | None
    described: str

    def matches(self, operation: str, error_type: str | None) -> bool:
        return operation == self.operation and (self.error_type is None or error_type == self.error_type)


KERNEL_HOUSEKEEPING = (
    Housekeeping(OpName.FORGET.value, None, "forget (the kernel dropping inodes from its cache)"),
    Housekeeping(
        OpName.GETXATTR.value,
        EXPECTED_FAILURES[OpName.GETXATTR.value],
        f"getxattr answered {EXPECTED_FAILURES[OpName.GETXATTR.value]} (the kernel's security.capability probes)",
    ),
)


def housekeeping_of(operation: str, error_type: str | None) -> Housekeeping | None:
    """The kind of kernel housekeeping a request is, or None when the workload asked for it."""
    return next((kind for kind in KERNEL_HOUSEKEEPING if kind.matches(operation, error_type or None)), None)
