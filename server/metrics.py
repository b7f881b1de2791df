"""Prometheus `/metrics` for one node: live sessions, sockets, messages, resumes, Redis,
connections."""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from server.connections import ConnectionStats
from signaling.endpoint import SignalingEndpoint
from signaling.hub import Hub
from signaling.redis_hub import RedisHub


class NodeCollector(Collector):
    """Reads the live figures at scrape time, so nothing is counted twice."""

    def __init__(self, endpoint: SignalingEndpoint, hub: Hub,
                 connections: ConnectionStats) -> None:
        self.endpoint = endpoint
        self.hub = hub
        self.connections = connections

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        counts = self.endpoint.counts
        stats = self.hub.stats()
        yield GaugeMetricFamily("erv_sockets", "Participant sockets held by this node",
                                value=stats.sockets)
        yield GaugeMetricFamily("erv_live_sessions",
                                "Sessions with a participant on this node",
                                value=stats.live_sessions)
        yield CounterMetricFamily("erv_messages_relayed",
                                  "Signal, chat, advice and location messages relayed",
                                  value=counts.relayed)
        yield CounterMetricFamily("erv_resumes", "Participants resumed after a reconnect",
                                  value=counts.resumes)
        yield GaugeMetricFamily("erv_connections_open",
                                "Client connections open on this node's listener",
                                value=self.connections.open)
        refused = CounterMetricFamily("erv_connections_refused",
                                      "Connections refused at accept: a client's or the "
                                      "node's connection limit was reached",
                                      labels=["limit"])
        for limit in ("per_client", "total"):
            refused.add_metric([limit], self.connections.refused[limit])
        yield refused
        yield CounterMetricFamily("erv_connections_timed_out",
                                  "Connections closed because their request headers did not "
                                  "arrive within ERV_HEADER_TIMEOUT",
                                  value=self.connections.timed_out)
        if isinstance(self.hub, RedisHub):
            yield GaugeMetricFamily("erv_redis_up", "1 if this node reaches Redis",
                                    value=1 if self.hub.redis_ok else 0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.redis_round_trip = Histogram(
            "erv_redis_roundtrip_seconds", "Round trip of this node's Redis heartbeat",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )

    def watch(self, endpoint: SignalingEndpoint, hub: Hub,
              connections: ConnectionStats) -> None:
        self.registry.register(NodeCollector(endpoint, hub, connections))

    async def handle(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
