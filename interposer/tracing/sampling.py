"""Sampling decided when a span ends, so errors and injected faults are never sampled away.

A head sampler decides when a span starts, before anyone knows that the
operation will fail.  Here every span is recorded, and this processor decides
at its end: keep it if its trace falls in the ratio (by trace id, so a whole
handle session is kept or dropped together), if it failed, if a fault was
injected into it, or if one of its children was kept.  Children end before
their parents, so a parent always knows.
"""

from __future__ import annotations

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from ..names import ATTR_FAULT

_MAX_PENDING_PARENTS = 1 << 16
_TRACE_ID_MASK = (1 << 64) - 1


class KeepErrorsSampler(SpanProcessor):
    """Forwards kept spans to ``delegate`` (the batch processor); drops the rest."""

    def __init__(self, delegate: SpanProcessor, ratio: float) -> None:
        self._delegate = delegate
        self._bound = round(ratio * (1 << 64))
        self._parents_to_keep: set[int] = set()
        self.kept = 0
        self.dropped = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        assert context is not None
        keep = (
            (context.trace_id & _TRACE_ID_MASK) < self._bound
            or span.status.status_code is StatusCode.ERROR
            or (span.attributes is not None and ATTR_FAULT in span.attributes)
            or context.span_id in self._parents_to_keep
        )
        self._parents_to_keep.discard(context.span_id)
        if not keep:
            self.dropped += 1
            return
        self.kept += 1
        if span.parent is not None:
            if len(self._parents_to_keep) >= _MAX_PENDING_PARENTS:
                self._parents_to_keep.clear()  # bounded: parents that never end must not grow it
            self._parents_to_keep.add(span.parent.span_id)
        self._delegate.on_end(span)

    def shutdown(self) -> None:
        self._delegate.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._delegate.force_flush(timeout_millis)
