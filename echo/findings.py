"""The finding vocabulary shared by the synthetic generator, the labeler and the metrics.

Ground truth in a manifest row is ``labels: {finding: "positive" | "negative"}`` for every class in
`FINDINGS`, and ``attributes: {finding: {...}}`` for positive findings that have a side or a lobe
(keys as in `ATTRIBUTES`). The labeler also answers `Label.UNCERTAIN` for hedged mentions.
"""

from __future__ import annotations

from enum import StrEnum


class Label(StrEnum):
    POSITIVE = "positive"
    NEGATIVE = "negative"
    UNCERTAIN = "uncertain"


# The finding classes, in the order tables print them. "No finding" is derived: no class positive.
FINDINGS: tuple[str, ...] = (
    "cardiomegaly",
    "pleural_effusion",
    "pneumothorax",
    "consolidation",
    "nodule",
    "edema",
    "endotracheal_tube",
    "central_line",
    "pacemaker",
)

SUPPORT_DEVICES: tuple[str, ...] = ("endotracheal_tube", "central_line", "pacemaker")

SIDES: tuple[str, ...] = ("left", "right", "bilateral")
LOBES: tuple[str, ...] = (
    "right upper lobe",
    "right middle lobe",
    "right lower lobe",
    "left upper lobe",
    "left lower lobe",
)

# Which attribute each finding carries when positive, and its allowed values.
ATTRIBUTES: dict[str, dict[str, tuple[str, ...]]] = {
    "pleural_effusion": {"side": SIDES},
    "pneumothorax": {"side": ("left", "right")},
    "consolidation": {"lobe": LOBES},
    "nodule": {"side": ("left", "right")},
}

# The seven regions every normalised Findings section mentions.
REGIONS: tuple[str, ...] = ("lungs", "pleura", "heart", "mediastinum", "airway_hila", "bones", "devices")
