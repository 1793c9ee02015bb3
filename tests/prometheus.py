"""A real Prometheus (3.x, as the charts deploy it, built by tools/gobuild.py) for tests: started on loopback,
scraping given targets, queried by HTTP."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from interposer.local.ports import free_port

from .servers import built_program, ready_server

SCRAPE_INTERVAL_MS = 500
"""Time between scrapes: short, so a test waits for one scrape, not for minutes."""


@dataclass
class Prometheus:
    """A running Prometheus and its HTTP API."""

    url: str

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
            reply = json.load(response)
        assert reply["status"] == "success", reply
        return reply["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's vector: each item has 'metric' (labels) and 'value' ([time, text])."""
        result: list[dict[str, Any]] = self.api("query", query=promql)["result"]
        return result

    def value(self, promql: str) -> float | None:
        """The single value of a query that yields at most one series."""
        result = self.query(promql)
        assert len(result) <= 1, f"{promql} yields {len(result)} series"
        return float(result[0]["value"][1]) if result else None

    def by(self, promql: str, label: str) -> dict[str, float]:
        """A query's values keyed by one label."""
        return {item["metric"].get(label, ""): float(item["value"][1]) for item in self.query(promql)}

    def wait_for_scrape_after(self, moment: float, job: str, timeout: float = 30.0) -> None:
        """Block until Prometheus holds a scrape of ``job`` that started after ``moment`` (a time.time())."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            latest = self.value(f'timestamp(up{{job="{job}"}})')
            if latest is not None and latest > moment:
                return
            time.sleep(SCRAPE_INTERVAL_MS / 5000)
        raise AssertionError(f"Prometheus did not scrape {job} within {timeout}s")


@dataclass
class Scrape:
    """One scrape of an endpoint, parsed."""

    samples: list[tuple[str, dict[str, str], float]]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` that carry ``labels`` (and any others, such as the resource's)."""
        matching = [
            value
            for sample, sample_labels, value in self.samples
            if sample == name and labels.items() <= sample_labels.items()
        ]
        assert matching, f"no sample {name} with {labels}"
        return sum(matching)


def scrape(url: str) -> Scrape:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return Scrape(
        [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]
    )


@contextmanager
def running_prometheus(
    work: Path, targets: dict[str, str], rule_files: tuple[Path, ...] = (), alertmanager: str | None = None
) -> Iterator[Prometheus]:
    """Prometheus scraping ``targets`` (job -> host:port) with exemplar storage on, evaluating ``rule_files``
    every scrape interval and sending alerts to ``alertmanager`` (host:port); stopped afterwards."""
    binary = built_program("prometheus")
    config = {
        "global": {"scrape_interval": f"{SCRAPE_INTERVAL_MS}ms", "evaluation_interval": f"{SCRAPE_INTERVAL_MS}ms"},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in targets.items()
        ],
        "rule_files": [str(path) for path in rule_files],
    }
    if alertmanager is not None:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    config_file = work / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    command = [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={work / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--enable-feature=exemplar-storage",
    ]
    with ready_server("prometheus", work, command, port) as url:
        yield Prometheus(url)
