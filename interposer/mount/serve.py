"""Mounting: check the mountpoint, assemble backend, pipeline and adapter, serve until told to stop."""

from __future__ import annotations

import cProfile
import itertools
import logging
import os
import random
import resource
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyfuse3
import trio

from ..backends import syscalls
from ..backends.fake import FakeBackend
from ..backends.passthrough import PassthroughBackend
from ..backends.protocol import Backend
from ..config import ConfigError, InterposerConfig, TracingConfig
from ..fuse.adapter import InterposerFS
from ..fuse.pipeline import Pipeline
from ..layers.tracing.propagation import CallerContexts
from ..layers.tracing.records import session_record
from ..names import (
    ATTR_RECONFIGURE_SECTIONS,
    ATTR_RECONFIGURE_SOURCE,
    PROFILE_VARIABLE,
    SIGNAL_METRICS,
    SIGNAL_TRACES,
    SPAN_RECONFIGURE,
)
from ..telemetry.metrics_setup import MetricsSetup, build_metrics
from ..telemetry.shared import TelemetryHealth, build_resource
from ..telemetry.shipper import FINAL_EXPORT_TIMEOUT
from ..telemetry.tracing_setup import TracingSetup, build_tracing, exporter_kind
from . import kept_spans
from .control import INTERPOSER_FSTYPE, ControlServer, socket_path_for
from .reconfigure import LayerStack
from .registry import Outlets
from .table import is_stale, mount_at, unmount

log = logging.getLogger(__name__)


def keeps_spans(config: TracingConfig) -> bool:
    """Whether the mount writes its spans to a kept file of the state directory: the file exporter without
    ``tracing.file``.  Only then does it touch the state directory (a volume's server may not even write there)."""
    return config.enabled and config.file is None and exporter_kind(config) == "file"


class MountError(RuntimeError):
    """The mount cannot be made; the message says why and what to do."""


def prepare_mountpoint(mountpoint: Path, *, force: bool, allow_nonempty: bool) -> None:
    """Refuse a stale, occupied or non-empty mountpoint, or with ``force`` clear a stale one.

    A mount over a directory hides what it holds until unmount, which looks like lost files: that takes
    ``allow_nonempty`` (libfuse 2's ``nonempty`` option; libfuse 3 mounts there without a word).
    """
    if is_stale(mountpoint):
        if not force:
            raise MountError(
                f"{mountpoint} is a stale FUSE mount (Transport endpoint is not connected): "
                f"the process that served it is gone. Run 'interposer unmount --force {mountpoint}' "
                "or mount again with --force."
            )
        log.warning("clearing stale mount at %s", mountpoint)
        unmount(mountpoint, lazy=True)
    if not mountpoint.is_dir():
        raise MountError(f"mountpoint {mountpoint} does not exist or is not a directory")
    existing = mount_at(mountpoint)
    if existing is not None and existing.fstype == INTERPOSER_FSTYPE:
        raise MountError(
            f"{mountpoint} is already an interposer mount: 'interposer ctl {mountpoint} status' shows what it "
            f"serves, 'interposer unmount {mountpoint}' stops it"
        )
    if existing is not None and existing.fstype.startswith("fuse"):
        raise MountError(
            f"{mountpoint} is already a FUSE mount ({existing.fstype} of {existing.source}): unmount it first "
            f"('fusermount3 -u {mountpoint}') or choose another mountpoint"
        )
    hidden = _some_entries(mountpoint)
    if hidden and not allow_nonempty:
        raise MountError(
            f"{mountpoint} is not empty (it holds {hidden}): a mount there hides them until unmount. Mount on an "
            "empty directory, or pass --allow-nonempty (fuse.allow_nonempty in a config file) if that is wanted"
        )
    if hidden:
        log.warning("%s is not empty: what it holds (%s) is hidden until unmount", mountpoint, hidden)


def _some_entries(directory: Path, most: int = 3) -> str:
    """The first few names in ``directory``, for a message ('' if none): a large one is not read to its end."""
    with os.scandir(directory) as entries:
        names = [entry.name for entry in itertools.islice(entries, most + 1)]
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")


def _raise_fd_limit() -> int:
    """Known inodes and open files hold descriptors: allow as many as we may; return the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(hard, int(Path("/proc/sys/fs/nr_open").read_text()))
    for limit in (wanted, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        except (ValueError, OSError):
            continue
        return limit
    return soft


def _mount_options(config: InterposerConfig) -> set[str]:
    options = {f"fsname={config.fuse.fsname}", "subtype=interposer", "default_permissions"}
    if config.fuse.read_only:
        options.add("ro")
    if config.fuse.allow_other:
        if os.geteuid() == 0 or "user_allow_other" in _fuse_conf():
            options.add("allow_other")
        else:
            log.warning("allow_other needs root or user_allow_other in /etc/fuse.conf; mounting without it")
    return options


def _fuse_conf() -> str:
    try:
        return Path("/etc/fuse.conf").read_text()
    except OSError:
        return ""


def make_backend(config: InterposerConfig, backing: Path, fd_limit: int) -> Backend:
    """The backend the config names: the backing directory, or memory."""
    if config.backend.kind == "fake":
        return FakeBackend(config.cache, config.backend.fake, xattrs=config.fuse.xattrs)
    return PassthroughBackend(
        str(backing), config.cache, config.backend.max_inode_fds or fd_limit // 2, xattrs=config.fuse.xattrs
    )


class Mount:
    """One served mount: its backend, pipeline, adapter and control socket."""

    def __init__(self, backing: Path, mountpoint: Path, config: InterposerConfig) -> None:
        if not backing.is_dir():
            raise MountError(f"backing directory {backing} does not exist or is not a directory")
        self.backing = backing.resolve()
        self.mountpoint = mountpoint.absolute()
        self.config = config
        self.backend = make_backend(config, self.backing, _raise_fd_limit())
        self.health = TelemetryHealth()
        self.health.install()
        resource = build_resource(self.mountpoint, self.backing, config.volume_id)
        self.tracing: TracingSetup | None = None
        self.metrics: MetricsSetup | None = None
        self.contexts = CallerContexts(config.tracing.context_cache_size)
        self.default_span_file = kept_spans.new_path(self.mountpoint, datetime.now(UTC))
        if keeps_spans(config.tracing):
            kept_spans.prune(config.tracing.kept_max_bytes)
            kept_spans.prepare()
        if config.tracing.enabled:
            self.tracing = build_tracing(config.tracing, self.default_span_file, resource, self.health)
        if config.metrics.enabled:
            self.metrics = build_metrics(config.metrics, resource, self.health)
        outlets = Outlets(
            self.health,
            spans=None if self.tracing is None else self.tracing.sink,
            sample_ratio=1.0 if self.tracing is None else self.tracing.ratio,
            contexts=self.contexts,
            metrics=self.metrics,
        )
        self.pipeline = Pipeline(self.backend)
        self.layers = LayerStack(self.pipeline, config, outlets, self.backend)
        self.fs = InterposerFS(
            self.pipeline,
            self.backend,
            negative_timeout=config.cache.negative_timeout,
            writeback_cache=config.cache.writeback_cache,
        )
        self.control = ControlServer(
            config.control.socket or socket_path_for(self.mountpoint),
            {"status": self._status, "configure": self._configure, "layer": self._switch, "crash": self._crash},
        )
        if self.tracing is not None:
            self.tracing.wait_ready()  # the export process has started meanwhile; its config errors stop us here

    async def _configure(self, request: dict[str, Any]) -> dict[str, Any]:
        sections = request.get("sections")
        if not isinstance(sections, dict):
            raise ConfigError("configure needs 'sections': a mapping of faults, throttle and/or crash settings")
        started = time.time_ns()
        config = self.layers.replace_sections(sections)
        source = request.get("source")  # who asked, when not a person at 'ctl set': a VolumeExperiment
        source = source if isinstance(source, str) else "ctl set"
        log.info("reconfigured %s (%s)", ", ".join(sorted(sections)), source)
        self._trace_reconfiguration(sorted(sections), source, started)
        return {"config": config.model_dump(mode="json")}

    def _trace_reconfiguration(self, sections: list[str], source: str, started: int) -> None:
        """A span of its own in the volume's traces, whatever the sampling: which sections changed, and who asked,
        so the requests that a new fault rule failed can be told from those before it."""
        if self.tracing is None:
            return
        ids = (random.getrandbits(128) | 1, random.getrandbits(64) | 1)  # W3C ids are never zero
        attributes = {ATTR_RECONFIGURE_SECTIONS: sections, ATTR_RECONFIGURE_SOURCE: source}
        self.tracing.sink.add(session_record(SPAN_RECONFIGURE, ids, None, (started, time.time_ns()), attributes, 0))

    async def _crash(self, _request: dict[str, Any]) -> dict[str, Any]:
        return {"undone": await self.layers.crash()}

    async def _switch(self, request: dict[str, Any]) -> dict[str, Any]:
        name, enabled = request.get("name"), request.get("enabled")
        if not isinstance(name, str) or not isinstance(enabled, bool):
            raise ConfigError("layer needs 'name' (a layer) and 'enabled' (true or false)")
        self.layers.switch(name, enabled)
        log.info("layer %s switched %s", name, "on" if enabled else "off")
        return self.layers.status()

    async def _status(self, _request: dict[str, Any]) -> dict[str, Any]:
        return {
            "mountpoint": str(self.mountpoint),
            "backing": str(self.backing),
            "pid": os.getpid(),
            "backend": self.config.backend.kind,
            "metrics_url": None if self.metrics is None else self.metrics.destinations.get("prometheus"),
            **self.backend.stats(),
            "internal_errors": self.fs.internal_errors,
            "tracing": self._tracing_status(),
            "metrics": self._metrics_status(),
            **self.layers.status(),
            "config": self.layers.config.model_dump(mode="json"),
        }

    def _tracing_status(self) -> dict[str, Any] | None:
        layer = self.layers.tracing
        if self.tracing is None or layer is None:
            return None
        return {
            "exporter": self.tracing.exporter_name,
            "destination": self.tracing.destination,
            "sample_ratio": self.tracing.ratio,
            "operations_kept": layer.kept,
            "operations_sampled_out": layer.sampled_out,
            "spans_dropped": self.health.dropped_spans,
            "export_failures": self.health.export_failures[SIGNAL_TRACES],
            "trace_contexts": self.contexts.status(),
        }

    def _metrics_where(self) -> str:
        """Where this mount's metrics are, for the first log line: several mounts cannot all have port 9464."""
        if self.metrics is None:
            return "metrics off"
        places = [
            f"{'scrape' if exporter == 'prometheus' else 'pushed to'} {destination}"
            for exporter, destination in self.metrics.destinations.items()
        ]
        return "metrics: " + ", ".join(places) if places else "metrics: no exporter"

    def _metrics_status(self) -> dict[str, Any] | None:
        layer = self.layers.metrics
        if self.metrics is None or layer is None:
            return None
        return {
            "exporters": self.metrics.destinations,
            "operations_active": sum(layer.active.values()),
            "bytes": layer.bytes,
            "handles_open": layer.handles,
            "directories_net_created": layer.directories_net_created,
            "export_failures": self.health.export_failures[SIGNAL_METRICS],
        }

    def serve(self, fuse_fd: int | None = None) -> None:
        """Mount, serve until SIGINT/SIGTERM or an external unmount, then unmount.

        With ``fuse_fd``, a /dev/fuse descriptor that a privileged process has
        already mounted at the mountpoint, serve it as ``/dev/fd/N`` (libfuse
        takes that as a mounted channel): no mount here, and none to undo.
        """
        os.umask(0)  # the kernel has applied the caller's umask already
        syscalls.keep_large_buffers_on_heap()
        channel = str(self.mountpoint) if fuse_fd is None else f"/dev/fd/{fuse_fd}"
        pyfuse3.init(self.fs, channel, _mount_options(self.config))
        try:
            log.info(
                "mounted %s at %s; %s; control socket %s",
                self.backing,
                self.mountpoint,
                self._metrics_where(),
                self.control.path,
            )
            if self.tracing is not None:
                log.info("spans go to %s (%s)", self.tracing.destination, self.tracing.exporter_name)
            self._run_session()
        finally:
            pyfuse3.close(unmount=fuse_fd is None)
            self.layers.close()
            self._stop_telemetry()
            self.health.uninstall()
            self.backend.close()
            log.info("unmounted %s%s", self.mountpoint, self._spans_where())

    def _stop_telemetry(self) -> None:
        """Spans and metrics make their last exports at the same time: a dead collector, which each gives up on
        after ``FINAL_EXPORT_TIMEOUT``, then delays the end of the process once, not twice."""
        metrics = None
        if self.metrics is not None:
            metrics = threading.Thread(target=self.metrics.shutdown, args=(FINAL_EXPORT_TIMEOUT,), name="metrics-stop")
            metrics.start()
        if self.tracing is not None:
            self.tracing.shutdown()
            if keeps_spans(self.config.tracing):
                kept_spans.prune(self.config.tracing.kept_max_bytes, keep=self.default_span_file)
        if metrics is not None:
            metrics.join()

    def _spans_where(self) -> str:
        """For the last log line: where a span file is, and how to read it (nothing when spans went elsewhere)."""
        if self.tracing is None or self.tracing.exporter_name != "file":
            return ""
        return "; " + kept_spans.reading_hint(Path(self.tracing.destination))

    def _run_session(self) -> None:
        """Serve until stopped; under cProfile when PROFILE_VARIABLE names a file (the benchmark's --profile)."""
        profile = os.environ.get(PROFILE_VARIABLE)
        if not profile:
            trio.run(self._session)
            return
        profiler = cProfile.Profile()
        try:
            profiler.runcall(trio.run, self._session)
        finally:
            profiler.dump_stats(profile)

    async def _session(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._stop_on_signal)
            await nursery.start(self.control.serve)
            if self.layers.tracing is not None:
                await nursery.start(self.layers.tracing.sweep)
            if self.tracing is not None:
                await nursery.start(self.tracing.run)
            await pyfuse3.main(min_tasks=1, max_tasks=self.config.fuse.max_workers)
            nursery.cancel_scope.cancel()

    async def _stop_on_signal(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("received %s, unmounting", signal.Signals(signum).name)
                pyfuse3.terminate()
                return
