"""ARM calls by operation and result code, in a registry the caller owns.

A registry is injected (not the global default) so tests and several provisioner instances in
one process never collide; the metrics endpoint serves whichever registry it is given.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["ArmCallCounter", "ProvisionerMetrics"]


class ArmCallCounter:
    """``kaito_provisioner_arm_calls_total{operation, code}``; ``code`` is the HTTP status, or
    ``timeout`` / ``transport`` / ``credential`` when no response came back."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._counter = Counter(
            "kaito_provisioner_arm_calls",
            "Azure Resource Manager calls made by the gpu-provisioner, by operation and result.",
            ("operation", "code"),
            registry=self.registry,
        )

    def record(self, operation: str, code: str) -> None:
        self._counter.labels(operation=operation, code=code).inc()

    def value(self, operation: str, code: str) -> float:
        """The count for one (operation, code) pair; 0 when never seen."""
        sample = self.registry.get_sample_value(
            "kaito_provisioner_arm_calls_total", {"operation": operation, "code": code}
        )
        return sample or 0.0

    def snapshot(self) -> dict[tuple[str, str], float]:
        """Every (operation, code) seen so far with its count."""
        out: dict[tuple[str, str], float] = {}
        for metric in self.registry.collect():
            for sample in metric.samples:
                if sample.name == "kaito_provisioner_arm_calls_total":
                    out[(sample.labels["operation"], sample.labels["code"])] = sample.value
        return out


class ProvisionerMetrics:
    """Everything the provisioner exports, in one registry: ARM calls (``arm``), pools owned,
    Machines (or NodeClaims: the kind it serves) by lifecycle phase, reconcile errors by class
    and pools garbage-collected."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.arm = ArmCallCounter(self.registry)
        self.pools_owned = Gauge(
            "kaito_provisioner_pools_owned",
            "Agent pools carrying the kaito labels, as of the last garbage-collection pass.",
            registry=self.registry,
        )
        self.machines = Gauge(
            "kaito_provisioner_machines",
            "Machines or NodeClaims (the kind served) by their furthest True condition "
            "(Pending, Failed, MachineLaunched or Launched, ...).",
            ("condition",),
            registry=self.registry,
        )
        self.errors = Counter(
            "kaito_provisioner_errors",
            "Failures while reconciling Machines or NodeClaims, by class.",
            ("error",),
            registry=self.registry,
        )
        self.pools_collected = Counter(
            "kaito_provisioner_pools_garbage_collected",
            "Orphaned agent pools of ours whose deletion garbage collection started.",
            registry=self.registry,
        )

    def set_phases(self, counts: dict[str, int], lifecycle: Sequence[str]) -> None:
        """``lifecycle``: the condition types of the kind served, in order."""
        for phase in ("Pending", "Failed", *lifecycle):
            self.machines.labels(condition=phase).set(counts.get(phase, 0))
