"""Prometheus alert and recording rules for cnfs-interposer, generated from the names the interposer exports."""
