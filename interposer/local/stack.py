"""The local stack: Prometheus and Alertmanager on this machine, for a user without a cluster.

``interposer stack up`` writes their configuration into a state directory,
starts both in the background on 127.0.0.1 with the generated alert rules,
and points Prometheus at every running mount's scrape endpoint (found
through the mounts' control sockets).  Running it again refreshes the target
list, which Prometheus rereads by itself.  ``interposer stack down`` stops
both.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from ..mount.control import request, runtime_dir

RULES = importlib.resources.files("interposer.data") / "cnfs-interposer.rules.yaml"
"""The rule file ``python -m alerts`` generates (the same the chart ships), as package data."""
SCRAPE_INTERVAL = "5s"
JOB = "cnfs-interposer"


class StackError(RuntimeError):
    """The stack cannot start; the message says what is missing."""


def mount_endpoints() -> dict[str, str]:
    """Every running mount's scrape target (host:port), by mountpoint, from its control socket."""
    targets = {}
    directory = runtime_dir()
    for socket_path in sorted(directory.glob("*.sock")) if directory.is_dir() else []:
        try:
            status = request(socket_path, {"command": "status"}, timeout=2)
        except OSError:
            continue  # a socket left behind by a mount that is gone
        url = ((status.get("metrics") or {}).get("exporters") or {}).get("prometheus")
        if status.get("ok") and url:
            parsed = urlparse(url)
            targets[status["mountpoint"]] = f"{parsed.hostname}:{parsed.port}"
    return targets


@dataclass
class Service:
    """One server of the stack: its command and where it listens."""

    name: str
    command: list[str]
    port: int

    @property
    def ready(self) -> str:
        """The URL that answers 200 once the server is ready (both servers have it)."""
        return f"http://127.0.0.1:{self.port}/-/ready"


class LocalStack:
    """Prometheus and Alertmanager under one state directory."""

    def __init__(self, directory: Path, prometheus_port: int = 9090, alertmanager_port: int = 9093) -> None:
        self.directory = directory
        self.prometheus_port = prometheus_port
        self.alertmanager_port = alertmanager_port

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.alertmanager_port}"

    def _services(self) -> list[Service]:
        prometheus = _binary("prometheus", "prometheus")
        alertmanager = _binary("prometheus-alertmanager", "prometheus-alertmanager")
        return [
            Service(
                "alertmanager",
                [
                    alertmanager,
                    f"--config.file={self.directory / 'alertmanager.yml'}",
                    f"--storage.path={self.directory / 'alertmanager'}",
                    f"--web.listen-address=127.0.0.1:{self.alertmanager_port}",
                    "--cluster.listen-address=",
                ],
                self.alertmanager_port,
            ),
            Service(
                "prometheus",
                [
                    prometheus,
                    f"--config.file={self.directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.directory / 'prometheus'}",
                    f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
                    "--enable-feature=exemplar-storage",
                ],
                self.prometheus_port,
            ),
        ]

    def _write_configuration(self, webhook: str | None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # Prometheus reads the rules from the state directory: package data need not be a file on disk.
        rules = self.directory / "rules.yaml"
        rules.write_text(RULES.read_text())
        prometheus = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
            "rule_files": [str(rules)],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{self.alertmanager_port}"]}]}]},
            "scrape_configs": [
                {"job_name": JOB, "file_sd_configs": [{"files": [str(self.directory / "targets.json")]}]}
            ],
        }
        (self.directory / "prometheus.yml").write_text(yaml.safe_dump(prometheus))
        receiver: dict[str, Any] = {"name": "default"}
        if webhook:
            receiver["webhook_configs"] = [{"url": webhook}]
        alertmanager = {
            "route": {"receiver": "default", "group_wait": "10s", "group_interval": "1m", "repeat_interval": "4h"},
            "receivers": [receiver],
        }
        (self.directory / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager))

    def refresh_targets(self) -> dict[str, str]:
        """Point Prometheus at the mounts running now; it rereads the file on its own."""
        endpoints = mount_endpoints()
        groups = [
            {"targets": [target], "labels": {"mountpoint": mountpoint}} for mountpoint, target in endpoints.items()
        ]
        temporary = self.directory / "targets.json.new"
        temporary.write_text(json.dumps(groups, indent=2))
        temporary.replace(self.directory / "targets.json")
        return endpoints

    def up(self, webhook: str | None = None) -> dict[str, str]:
        """Start whatever is not running; refresh the targets either way."""
        self._write_configuration(webhook)
        targets = self.refresh_targets()
        for service in self._services():
            pid = self._pid(service.name)
            if pid is not None:
                os.kill(pid, signal.SIGHUP)  # reload the configuration
                continue
            if _answers(service.ready):  # another program would pass for this one's readiness, and serve instead
                raise StackError(
                    f"something else already answers at {service.ready}, where {service.name} would listen "
                    "(another stack, with another --dir?): stop it, or give this stack other ports"
                )
            with (self.directory / f"{service.name}.log").open("ab") as log:
                process = subprocess.Popen(
                    service.command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
                )
            (self.directory / f"{service.name}.pid").write_text(str(process.pid))
            self._wait_ready(service, process)
        return targets

    def active_alerts(self, name: str) -> list[dict[str, Any]]:
        """The alerts called ``name`` that Alertmanager holds active now (its v2 API's alert objects)."""
        query = urllib.parse.urlencode({"filter": f'alertname="{name}"', "active": "true"})
        with urllib.request.urlopen(f"{self.alertmanager_url}/api/v2/alerts?{query}", timeout=10) as response:
            alerts: list[dict[str, Any]] = json.load(response)
        return alerts

    def down(self) -> list[str]:
        """Stop both servers; return the names of those that were running."""
        stopped = []
        for service in self._services():
            pid = self._pid(service.name)
            if pid is None:
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
            (self.directory / f"{service.name}.pid").unlink(missing_ok=True)
            stopped.append(service.name)
        return stopped

    def _pid(self, name: str) -> int | None:
        try:
            pid = int((self.directory / f"{name}.pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def _wait_ready(self, service: Service, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 60
        url = service.ready
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log = (self.directory / f"{service.name}.log").read_text()[-2000:]
                raise StackError(f"{service.name} exited with {process.returncode}:\n{log}")
            if _answers(url):
                return
            time.sleep(0.1)
        raise StackError(f"{service.name} is not ready at {url} after 60 s")


def _answers(url: str) -> bool:
    """Whether ``url`` answers 200: a server of the stack is ready there."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def _binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StackError(f"{name} is not installed: apt-get install {package}")
    return path
