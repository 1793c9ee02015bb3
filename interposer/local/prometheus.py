"""The few Prometheus HTTP API calls the report and the demo make, over one time window.

A Prometheus that does not answer is the most common first problem of a user
without a cluster, so it is told apart from a refused query: the message says
how to start the local one.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any


class PrometheusUnavailableError(RuntimeError):
    """Nothing answers at the URL; the message says how to start the local stack."""


class QueryRefusedError(ValueError):
    """Prometheus could not parse a query (a bad --rate-window): a usage error."""


@dataclass
class Series:
    """One labelled time series from a range query."""

    label: str
    times: list[float]
    values: list[float]


class Prometheus:
    """Range and instant queries over the window ``start``..``end``, sampled every ``step`` seconds."""

    def __init__(self, url: str, start: float, end: float, step: float) -> None:
        self.url = url.rstrip("/")
        self.start, self.end, self.step = start, end, step

    def _get(self, path: str, parameters: dict[str, Any]) -> Any:
        query = urllib.parse.urlencode(parameters, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as response:
                reply: dict[str, Any] = json.load(response)
        except urllib.error.HTTPError as exc:
            if exc.code != 400:  # Prometheus's answer to a query it cannot parse
                raise
            refusal = json.load(exc).get("error")
            raise QueryRefusedError(f"Prometheus refused {parameters.get('query', path)}: {refusal}") from None
        except urllib.error.URLError as exc:
            raise PrometheusUnavailableError(
                f"no Prometheus answers there ({exc.reason}): start the local one with 'interposer stack up', "
                "or pass --prometheus URL"
            ) from None
        if reply.get("status") != "success":
            raise RuntimeError(f"Prometheus refused {parameters}: {reply.get('error')}")
        return reply["data"]

    def range(self, promql: str, label: str) -> list[Series]:
        """A range query's series, each named by its value of ``label``."""
        data = self._get("query_range", {"query": promql, "start": self.start, "end": self.end, "step": self.step})
        return [
            Series(
                item["metric"].get(label, "all"),
                [float(t) for t, _ in item["values"]],
                [float(v) for _, v in item["values"]],
            )
            for item in data["result"]
        ]

    def instant(self, promql: str, *labels: str, at: float | None = None) -> list[tuple[tuple[str, ...], float]]:
        """An instant query (at the end of the window unless ``at``): (values of ``labels``, value), largest first."""
        data = self._get("query", {"query": promql, "time": self.end if at is None else at})
        values = [
            (tuple(item["metric"].get(label, "") for label in labels), float(item["value"][1]))
            for item in data["result"]
        ]
        return sorted(values, key=lambda pair: -pair[1])

    def scalar(self, promql: str, at: float | None = None) -> float | None:
        """The one value of an aggregating query, or None when it has no result."""
        result = self.instant(promql, at=at)
        return result[0][1] if result else None

    def label_values(self, label: str, match: str) -> list[str]:
        """Values of ``label`` on the series ``match`` selects within the window."""
        values: list[str] = self._get(f"label/{label}/values", {"match[]": match, "start": self.start, "end": self.end})
        return values
