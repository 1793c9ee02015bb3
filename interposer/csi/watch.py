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


def start(node: NodeService, interval: float) -> threading.Thread:
    """Look at every volume's server every ``interval`` seconds, in a daemon thread, for the plugin's life."""

    def look() -> None:
        while not stopped.wait(interval):
            try:
                node.abnormal_volumes()
            except Exception:  # a look that fails must not end the looking: the next one may succeed
                log.exception("looking at the volumes' servers failed; trying again in %.1f s", interval)

    stopped = threading.Event()
    thread = threading.Thread(target=look, name="volume-server-watch", daemon=True)
    thread.start()
    return thread
