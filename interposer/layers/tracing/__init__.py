"""Tracing: one span per FUSE operation, grouped under parent spans, exported over OTLP or to a file."""
