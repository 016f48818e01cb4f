"""Prometheus metrics, one registry per application (each worker process exposes its own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.pushes = Counter("linli_pushes", "WeChat pushes received, by message type", ["type"], registry=r)
        self.replies = Counter("linli_replies", "Answers to pushes, by how they were answered", ["mode"],
                               registry=r)
        self.duplicates = Counter("linli_duplicate_pushes", "WeChat retries answered from the first delivery",
                                  registry=r)
        self.fallbacks = Counter("linli_fallback_replies",
                                 "Steps slower than the reply budget, answered later through the outbox",
                                 registry=r)
        self.rejected = Counter("linli_rejected_pushes", "Pushes refused, by HTTP status", ["status"],
                                registry=r)
        self.sends = Counter("linli_outbox_sends", "Outbox send attempts, by result and WeChat error code",
                             ["result", "errcode"], registry=r)
        self.backlog = Gauge("linli_outbox_backlog", "Outbox messages not yet sent, by priority", ["priority"],
                             registry=r)
        self.backlog_age = Gauge("linli_outbox_oldest_age_seconds", "Age of the oldest unsent message",
                                 ["priority"], registry=r)
        self.step_seconds = Histogram(
            "linli_step_seconds", "Time the engine took to answer one message",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8), registry=r,
        )
