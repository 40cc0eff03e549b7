"""Prometheus metrics of the workspace controller, in a registry of their own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciles = Counter(
            "kaito_workspace_reconciles_total", "Reconcile passes by result",
            ["result"], registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "kaito_workspace_reconcile_errors_total", "Reconcile passes that raised",
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "kaito_workspace_reconcile_duration_seconds", "Duration of one reconcile pass",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.workspaces = Gauge(
            "kaito_workspaces", "Workspaces known to this operator by state", ["state"],
            registry=self.registry,
        )
