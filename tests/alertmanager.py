"""A real Alertmanager (the version the charts deploy, built by tools/gobuild.py) delivering to a webhook receiver
in the test."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from interposer.local.ports import free_port

from .servers import built_program, ready_server


@dataclass
class Webhook:
    """What Alertmanager delivered: each notification's JSON body."""

    notifications: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def alerts(self) -> list[dict[str, Any]]:
        with self.lock:
            return [alert for notification in self.notifications for alert in notification["alerts"]]


@dataclass
class Alertmanager:
    address: str
    webhook: Webhook


def _handler(webhook: Webhook) -> type[BaseHTTPRequestHandler]:
    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with webhook.lock:
                webhook.notifications.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Receiver


@contextmanager
def running_alertmanager(work: Path) -> Iterator[Alertmanager]:
    """Alertmanager on loopback (clustering off) routing every alert to a webhook in this process."""
    binary = built_program("alertmanager")
    webhook = Webhook()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(webhook))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = {
        "route": {"receiver": "test", "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "test", "webhook_configs": [{"url": f"http://127.0.0.1:{server.server_address[1]}/"}]}],
    }
    config_file = work / "alertmanager.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    command = [
        binary,
        f"--config.file={config_file}",
        f"--storage.path={work / 'alertmanager'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    try:
        with ready_server("alertmanager", work, command, port):
            yield Alertmanager(f"127.0.0.1:{port}", webhook)
    finally:
        server.shutdown()
        server.server_close()
