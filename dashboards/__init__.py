"""Grafana dashboards for cnfs-interposer, generated with grafanalib from the names the interposer exports."""
