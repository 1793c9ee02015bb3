"""The node plugin's own look at its volumes' servers, at a fixed interval.

A server that dies or hangs is logged, counted (``cnfs_csi_volume_servers_lost_total``) and recorded when the
plugin looks at its volume.  Without this loop it looks only when asked: the kubelet's NodeGetVolumeStats, a
scrape of the plugin's metrics, a publish.  A node whose kubelet does not ask for volume conditions and whose
metrics nobody scrapes would then never say that a volume's server is gone.
"""

from __future__ import annotations

import logging
import threading

from .node import NodeService

log = logging.getLogger(__name__)


class Watch:
    """Looks at every volume's server every ``interval`` seconds in a thread of its own, until ``stop``."""

    def __init__(self, node: NodeService, interval: float) -> None:
        self._node = node
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._look, name="volume-server-watch", daemon=True)
        self._thread.start()

    def _look(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self._node.abnormal_volumes()
            except Exception:  # a look that fails must not end the looking: the next one may succeed
                log.exception("looking at the volumes' servers failed; trying again in %.1f s", self._interval)

    def stop(self, timeout: float) -> None:
        """End the looking and wait (at most ``timeout``) for a look under way: the plugin then exits with no
        thread of its own still at work while the interpreter shuts down."""
        self._stopped.set()
        self._thread.join(timeout)
