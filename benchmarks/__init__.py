"""Benchmarks: the interposer against the native directory, in the same run, reported as ratios."""
