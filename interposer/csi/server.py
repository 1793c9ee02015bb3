"""The gRPC server: binds the services to their CSI method names on a unix socket.

Handlers are bound from the service descriptors of csi.proto, so each RPC's
request and response types come from the spec file and no generated stub code
is used.  A ``CsiError`` becomes its status code; any other exception becomes
INTERNAL with a log line, and the server keeps serving.  Every RPC is counted
by method and code for the plugin's own metrics endpoint.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message
from prometheus_client import REGISTRY, start_http_server

from . import csi_pb2
from .errors import CsiError
from .metrics import AbnormalVolumes, rpcs

log = logging.getLogger(__name__)

PACKAGE = "csi.v1"
Handler = Callable[[Any], Message]


def _bind(method: str, function: Handler) -> Callable[[Message, grpc.ServicerContext], Message]:
    def handle(request: Message, context: grpc.ServicerContext) -> Message:
        try:
            response = function(request)
        except CsiError as error:
            rpcs.labels(method, error.code.name).inc()
            log.info("%s: %s %s", method, error.code.name, error.message)
            context.abort(error.code, error.message)
        except Exception as exc:
            rpcs.labels(method, grpc.StatusCode.INTERNAL.name).inc()
            log.exception("%s failed", method)
            context.abort(grpc.StatusCode.INTERNAL, f"{method}: {type(exc).__name__}: {exc}")
        rpcs.labels(method, grpc.StatusCode.OK.name).inc()
        return response

    return handle


def generic_handler(service_name: str, service: object) -> grpc.GenericRpcHandler:
    """The handlers of one CSI service, by the methods csi.proto declares for it."""
    descriptor = csi_pb2.DESCRIPTOR.services_by_name[service_name]
    handlers = {}
    for method in descriptor.methods:
        request_type = getattr(csi_pb2, method.input_type.name)
        response_type = getattr(csi_pb2, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _bind(method.name, getattr(service, method.name)),
            request_deserializer=request_type.FromString,
            response_serializer=response_type.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(f"{PACKAGE}.{service_name}", handlers)


def socket_path(endpoint: str) -> Path:
    """The path of a ``unix:///abs/path`` endpoint; anything else is refused."""
    scheme, _, path = endpoint.partition("://")
    if scheme != "unix" or not path.startswith("/"):
        raise ValueError(f"--endpoint {endpoint!r}: allowed: unix:///absolute/path")
    return Path(path)


def serve(
    endpoint: str,
    services: dict[str, object],
    *,
    metrics_address: tuple[str, int] | None = None,
    abnormal_volumes: Callable[[], int] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT.  The volumes' servers keep running: a restarted plugin adopts them."""
    path = socket_path(endpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers([generic_handler(name, service) for name, service in services.items()])
    server.add_insecure_port(f"unix://{path}")
    if metrics_address is not None:
        if abnormal_volumes is not None:
            REGISTRY.register(AbnormalVolumes(abnormal_volumes))
        start_http_server(metrics_address[1], metrics_address[0])
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    server.start()
    log.info("serving %s on %s", ", ".join(services), path)
    stopping.wait()
    log.info("stopping; published volumes stay mounted")
    server.stop(grace=5).wait()
    path.unlink(missing_ok=True)
