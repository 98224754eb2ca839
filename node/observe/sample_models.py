"""The sample node's models: the bundled student, and the site's retrained one promoted over it.

Part of `node.observe.sample_node` (the made-up database the status page is shown and timed on):
two model versions, the gate's record that let the retrained one through, and the promotion row,
as `node.learning` would have left them `PROMOTED_WEEKS_AGO` weeks before `now`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from node.store.models import ModelPromotion, ModelVersion
from node.store.states import ModelRole

PROMOTED_WEEKS_AGO = 2
HISTORY_WEEKS = 8


@dataclass
class SampleModels:
    demo: ModelVersion  # the bundled student, retired at the promotion
    site: ModelVersion  # the site's retrained student, serving since


def seed_model_versions(session: Session, now: datetime) -> SampleModels:
    """The bundled model, retired, and the site's retrained one serving since its promotion."""
    promoted = now - timedelta(weeks=PROMOTED_WEEKS_AGO, hours=3)
    demo = ModelVersion(
        name="echo-demo-student",
        version="5f0c2a9e41d7b3c8a6e2f1d04b9a7c35",
        path="/opt/echo/models/student-onnx",
        sha256="a" * 64,
        block_size=8,
        created_at=now - timedelta(weeks=HISTORY_WEEKS + 1),
        role=ModelRole.RETIRED,
    )
    site = ModelVersion(
        name="echo-site-student",
        version="c41e9b7702fa5d18e3b6a09c2d74f1e8",
        path="/var/lib/echo/models/echo-site-student-c41e9b77",
        sha256="b" * 64,
        block_size=8,
        created_at=promoted - timedelta(hours=2),
        active=True,
        role=ModelRole.SERVING,
        parent_id=None,
        promoted_at=promoted,
        training={"stages": ["rad", "dcd"], "from": 1},
    )
    session.add_all([demo, site])
    session.flush()
    site.parent_id = demo.id
    site.gate = _gate(demo.id)
    session.add(
        ModelPromotion(
            model_version_id=site.id,
            previous_id=demo.id,
            action="promote",
            reason="retrained on 1,240 signed site reports; the gate passed",
            at=promoted,
        )
    )
    return SampleModels(demo, site)


def _gate(serving_id: int) -> dict[str, object]:
    """The gate's record as `node.learning.gate` writes it (the figures made up, the shape not)."""
    return {
        "passed": True,
        "decision": "promote",
        "reasons": [],
        "notes": [],
        "checks": {
            "f1": {
                "passed": True,
                "rule": "candidate F1 >= serving F1 - 0.040",
                "candidate": 0.511,
                "serving": 0.304,
            },
            "fp_per_normal": {
                "passed": True,
                "rule": "candidate FP/normal <= serving FP/normal + 0.060",
                "candidate": 0.180,
                "serving": 0.210,
            },
            "tokens_per_forward": {
                "passed": True,
                "rule": "candidate tokens per forward >= 0.9 B = 7.20",
                "candidate": 7.94,
                "serving": 7.91,
            },
            "parity": {
                "passed": True,
                "rule": "ONNX graphs agree with the candidate's checkpoint",
                "detail": "ONNX and checkpoint agree on 8/8 blocks",
            },
        },
        "candidate": {"studies": 240, "f1": 0.511, "fp_per_normal": 0.18, "tokens_per_forward": 7.94},
        "serving": {"studies": 240, "f1": 0.304, "model_version_id": serving_id},
        "margins": {"f1": 0.04, "fp_per_normal": 0.06, "how": "1.645 paired-bootstrap SE, clamped"},
        "held_out": {"split": "test", "manifest": "site-heldout/manifest.jsonl"},
    }
