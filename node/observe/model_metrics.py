"""The model registry's figures for /metrics: the promotion gate's decisions, promotions and rollbacks,
versions by role (`node.learning.registry`), read from the database like the node's other figures."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from node.store.models import ModelPromotion, ModelVersion
from node.store.states import ModelRole

PROMOTION_ACTIONS = ("promote", "rollback")


def model_registry_metrics(session: Session) -> Iterator[Metric]:
    gate = CounterMetricFamily(
        "echo_model_gate_decisions",
        "The promotion gate's decisions on retrained candidates (model_versions.gate).",
        labels=["decision"],
    )
    decisions = {"passed": 0, "failed": 0}
    for figures in session.scalars(select(ModelVersion.gate)):
        if figures:  # None (never gated) may come back as SQL NULL or JSON null
            decisions["passed" if figures.get("passed") else "failed"] += 1
    for decision, count in decisions.items():
        gate.add_metric([decision], count)
    yield gate

    switches = CounterMetricFamily(
        "echo_model_promotions",
        "Switches of the served model (model_promotions), by action.",
        labels=["action"],
    )
    found = dict(
        session.execute(select(ModelPromotion.action, func.count()).group_by(ModelPromotion.action)).all()
    )
    for action in PROMOTION_ACTIONS:
        switches.add_metric([action], found.get(action, 0))
    yield switches

    roles = GaugeMetricFamily("echo_model_versions", "Registered model versions by role.", labels=["role"])
    found = dict(session.execute(select(ModelVersion.role, func.count()).group_by(ModelVersion.role)).all())
    for role in ModelRole:
        roles.add_metric([role.value], found.get(role.value, 0))
    yield roles
