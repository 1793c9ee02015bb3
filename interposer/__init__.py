"""cnfs-interposer: a FUSE passthrough that traces, measures, slows and breaks file I/O."""

__version__ = "0.1.0"

from .trace_context import traced_io

__all__ = ["__version__", "traced_io"]
