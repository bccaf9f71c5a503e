"""Prometheus series of the media engines (one per calls shard; scraped through the ops
role's /metrics). Updated by each engine's clock once a second, never per packet."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

__all__ = ["MEDIA_LATE_TICKS", "MEDIA_PACKETS", "MEDIA_STREAMS"]

MEDIA_STREAMS = Gauge(
    "mirliton_media_streams",
    "Anchored RTP streams open in the media engines.",
    multiprocess_mode="livesum",
)
MEDIA_PACKETS = Counter(
    "mirliton_media_packets",
    "RTP packets by direction: received (from the far ends), sent (relayed or generated), "
    "dropped (bad, from an unlatched source, or failed to send).",
    ["direction"],
)
MEDIA_LATE_TICKS = Counter(
    "mirliton_media_late_ticks",
    "Clock ticks of a media engine that started more than one 20 ms frame late.",
)
