"""The crash section: whether the journal of unsynced writes runs."""

from __future__ import annotations

from pydantic import Field

from ...section import Section


class CrashConfig(Section):
    """Crash consistency (after lazyfs): drop every write that was not fsynced, on command."""

    enabled: bool = Field(
        False,
        description="Track writes not yet fsynced so 'interposer ctl MOUNTPOINT crash' can drop them "
        "(costs a read of the old data per write; needs backend.kind: passthrough).",
    )
