"""A traced program for tests/test_propagation.py: its spans go to the collector, its file I/O to a mount.

``python traced_app.py MOUNTPOINT`` with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set:
one ``request`` span; under it, a ``child-process`` span that starts a child
with ``TRACEPARENT`` (standard propagation, no code in the child) that writes
``/from-child``, and a ``thread-io`` span in a thread that writes
``/from-thread`` inside ``interposer.traced_io()`` (dynamic propagation).
It prints the ids the test checks as one JSON line.
"""

from __future__ import annotations

import contextvars
import json
import os
import subprocess
import sys
import threading

from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import interposer

SERVICE = "propagation-test-app"
CHILD = "with open(__import__('sys').argv[1], 'w') as f: f.write('from the child')"


def main() -> None:
    mountpoint = sys.argv[1]
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(insecure=True)))
    tracer = provider.get_tracer("traced-app")
    ids: dict[str, str | int] = {"pid": os.getpid()}

    def span_id(span: trace.Span) -> str:
        return f"{span.get_span_context().span_id:016x}"

    def in_thread() -> None:
        with tracer.start_as_current_span("thread-io") as span, interposer.traced_io(mountpoint):
            ids["thread_io"] = span_id(span)
            ids["thread_tid"] = threading.get_native_id()
            with open(os.path.join(mountpoint, "from-thread"), "w") as handle:
                handle.write("from the thread")
            os.stat(os.path.join(mountpoint, "from-thread"))
        os.path.exists(os.path.join(mountpoint, "after-the-block"))  # no longer announced: a trace of its own

    with tracer.start_as_current_span("request") as request:
        ids["trace"] = f"{request.get_span_context().trace_id:032x}"
        ids["request"] = span_id(request)
        with tracer.start_as_current_span("child-process") as span:
            ids["child_process"] = span_id(span)
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            environment = {**os.environ, "TRACEPARENT": carrier["traceparent"]}
            child = os.path.join(mountpoint, "from-child")
            subprocess.run([sys.executable, "-c", CHILD, child], env=environment, check=True)
        # A new thread starts with an empty context: hand it this one, as thread pools that propagate do.
        worker = threading.Thread(target=contextvars.copy_context().run, args=(in_thread,))
        worker.start()
        worker.join()
    provider.shutdown()
    print(json.dumps(ids))


if __name__ == "__main__":
    main()
