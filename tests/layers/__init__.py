"""Layers that tests load into a real mount through ``extra_layers``."""
