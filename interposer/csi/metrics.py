"""The node plugin's own metrics: their names are defined here once, for the code, docs and alerts."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

RPC_TOTAL = "cnfs_csi_rpc_total"
VOLUMES_ABNORMAL = "cnfs_csi_volumes_abnormal"
SERVERS_LOST_TOTAL = "cnfs_csi_volume_servers_lost_total"
LIVE_CONTROL_CHANGES_TOTAL = "cnfs_csi_live_control_changes_total"
LIVE_CONTROL_ACTION = "action"
LIVE_CONTROL_RESULT = "result"

rpcs = Counter(RPC_TOTAL.removesuffix("_total"), "CSI calls served, by method and gRPC code.", ["method", "code"])
servers_lost = Counter(
    SERVERS_LOST_TOTAL.removesuffix("_total"),
    "Volume servers found gone or hung while their volume was published (each counted once).",
)

live_control_changes = Counter(
    LIVE_CONTROL_CHANGES_TOTAL.removesuffix("_total"),
    "Volumes whose runtime sections VolumeExperiments changed: apply (a resource's sections) or revert (the "
    "volume's own), by result (ok, failed).",
    [LIVE_CONTROL_ACTION, LIVE_CONTROL_RESULT],
)


class AbnormalVolumes(Collector):
    """The number of published volumes whose server is gone or hung, counted at scrape time."""

    def __init__(self, count: Callable[[], int]) -> None:
        self.count = count

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily(VOLUMES_ABNORMAL, "Published volumes whose server is gone or hung.", value=self.count())
