"""cnfs-interposer: a FUSE passthrough that traces, measures, slows and breaks file I/O."""

__version__ = "0.1.0"
