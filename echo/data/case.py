"""The ground truth of one synthetic study: which findings are present, the body, the acquisition.

A `Case` is sampled first and everything else (pixels, report text, DICOM attributes) is derived
from it, so the manifest's labels are true by construction. Prevalence follows a small clinical
story (ICU patients carry tubes and lines; heart failure brings cardiomegaly, edema, effusions and
pacemakers) tuned to roughly 25% normal studies and 8-20% for each finding.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np

from echo.findings import ATTRIBUTES, FINDINGS, LOBES, Label

SIZES: tuple[str, ...] = ("small", "moderate", "large")
SEVERITIES: tuple[str, ...] = ("mild", "moderate")
ZONES: tuple[str, ...] = ("upper", "mid", "lower")
LINE_ROUTES: tuple[str, ...] = ("internal jugular", "subclavian")
LINE_TIPS: tuple[str, ...] = ("superior vena cava", "cavoatrial junction")
# Every encoding choice the sampler makes; possible_acquisitions() enumerates their combinations.
MODALITIES: tuple[str, ...] = ("CR", "DX")
FRONTAL_VIEWS: tuple[str, ...] = ("PA", "AP")
PHOTOMETRICS: tuple[str, ...] = ("MONOCHROME1", "MONOCHROME2")
BITS_STORED: tuple[int, ...] = (12, 14, 15, 16)
CR_RESCALES: tuple[tuple[float, float] | None, ...] = (None, (1.0, 0.0), (0.5, -100.0))
DX_RESCALE: tuple[float, float] = (1.0, 0.0)  # DX Image Module: Type 1, identity for presentation
VOIS: tuple[str, ...] = ("window", "lut")
ASPECTS: tuple[float, ...] = (1.0, 0.92, 0.84)


@dataclass(frozen=True)
class Body:
    """The patient's habitus and positioning; drawn the same whatever the findings."""

    sex: str  # "F" | "M"
    age: int
    size: float  # scales the body's half width (about 0.88-1.08)
    fat: float  # 0-1: soft-tissue thickness of the chest wall
    inspiration: float  # 0-1: depth of inspiration, lowers the diaphragm
    normal_ctr: float  # cardiothoracic ratio used when cardiomegaly is absent
    rotation_deg: float  # in-plane tilt of the whole patient
    shift: float  # horizontal offset of the midline, in image heights
    breast_shadows: bool


@dataclass(frozen=True)
class Acquisition:
    """How the study was acquired and encoded; none of it is a finding."""

    modality: str  # "CR" | "DX"
    view: str  # frontal view position: "PA" | "AP"
    lateral: bool  # a second, lateral image in the study
    photometric: str  # "MONOCHROME1" | "MONOCHROME2"
    bits_stored: int
    compressed: bool  # JPEG 2000 lossless transfer syntax
    voi: str  # "window" (center/width) | "lut" (VOI LUT Sequence plus a window)
    rescale: tuple[float, float] | None  # (slope, intercept), None: no Modality LUT attributes
    aspect: float  # width / height of the detector


@dataclass(frozen=True)
class Case:
    """Positive findings with their details; every other class in FINDINGS is negative.

    Details hold the manifest attributes (``side``, ``lobe``) and the descriptors the drawing and
    the report share (``size``, ``severity``, ``zone``, ``ctr``, device route and tip ...).
    """

    positives: MappingProxyType[str, MappingProxyType[str, Any]]
    body: Body
    acquisition: Acquisition
    icu: bool = field(default=False)

    def __post_init__(self) -> None:
        unknown = set(self.positives) - set(FINDINGS)
        if unknown:
            raise ValueError(f"unknown finding(s) {sorted(unknown)}; known: {', '.join(FINDINGS)}")

    @property
    def labels(self) -> dict[str, str]:
        return {
            name: (Label.POSITIVE if name in self.positives else Label.NEGATIVE).value for name in FINDINGS
        }

    @property
    def attributes(self) -> dict[str, dict[str, str]]:
        return {
            name: {key: str(self.positives[name][key]) for key in ATTRIBUTES[name]}
            for name in FINDINGS
            if name in self.positives and name in ATTRIBUTES
        }

    @property
    def is_normal(self) -> bool:
        return not self.positives

    def detail(self, finding: str, key: str) -> Any:
        return self.positives[finding][key]

    def without(self, finding: str) -> Case:
        """The same patient and acquisition with one finding removed (for visibility checks)."""
        kept = {name: details for name, details in self.positives.items() if name != finding}
        return replace(self, positives=_freeze(kept))


def _freeze(positives: dict[str, dict[str, Any]]) -> MappingProxyType[str, MappingProxyType[str, Any]]:
    return MappingProxyType({name: MappingProxyType(dict(details)) for name, details in positives.items()})


def make_case(
    positives: dict[str, dict[str, Any]], body: Body, acquisition: Acquisition, icu: bool = False
) -> Case:
    return Case(positives=_freeze(positives), body=body, acquisition=acquisition, icu=icu)


def _choice(
    rng: np.random.Generator, options: tuple[Any, ...], weights: tuple[float, ...] | None = None
) -> Any:
    if weights is None:
        return options[int(rng.integers(len(options)))]
    probabilities = np.asarray(weights, dtype=float) / sum(weights)
    return options[int(rng.choice(len(options), p=probabilities))]


def _sample_positives(
    rng: np.random.Generator, icu: bool, scale: Mapping[str, float] | None = None
) -> dict[str, dict[str, Any]]:
    """`scale` multiplies a finding's rate (a site's case mix); without it, the default rates exactly."""

    def rate(finding: str, probability: float) -> float:
        return probability if scale is None else min(0.95, probability * scale.get(finding, 1.0))

    positives: dict[str, dict[str, Any]] = {}
    if rng.random() < rate("cardiomegaly", 0.18):
        severity = _choice(rng, SEVERITIES, (0.6, 0.4))
        low, high = (0.56, 0.62) if severity == "mild" else (0.62, 0.70)
        positives["cardiomegaly"] = {"severity": severity, "ctr": float(rng.uniform(low, high))}
    heart_failure = "cardiomegaly" in positives
    if rng.random() < rate("edema", 0.35 if heart_failure else 0.10):
        positives["edema"] = {"severity": _choice(rng, SEVERITIES, (0.55, 0.45))}
    congested = heart_failure or "edema" in positives
    if rng.random() < rate("pleural_effusion", 0.35 if congested else 0.13):
        side = _choice(
            rng, ("left", "right", "bilateral"), (0.3, 0.35, 0.35) if congested else (0.4, 0.45, 0.15)
        )
        positives["pleural_effusion"] = {"side": side, "size": _choice(rng, SIZES, (0.45, 0.35, 0.2))}
    if rng.random() < rate("pneumothorax", 0.2 if icu else 0.13):
        positives["pneumothorax"] = {
            "side": _choice(rng, ("left", "right")),
            "size": _choice(rng, SIZES, (0.4, 0.4, 0.2)),
        }
    if rng.random() < rate("consolidation", 0.25 if icu else 0.17):
        positives["consolidation"] = {"lobe": _choice(rng, LOBES)}
    if rng.random() < rate("nodule", 0.15):
        positives["nodule"] = {"side": _choice(rng, ("left", "right")), "zone": _choice(rng, ZONES)}
    if rng.random() < rate("endotracheal_tube", 0.75 if icu else 0.0):
        positives["endotracheal_tube"] = {"tip_cm": int(rng.integers(3, 7))}
    if rng.random() < rate("central_line", 0.7 if icu else 0.08):
        positives["central_line"] = {
            "side": _choice(rng, ("right", "left"), (0.75, 0.25)),
            "route": _choice(rng, LINE_ROUTES, (0.65, 0.35)),
            "tip": _choice(rng, LINE_TIPS),
        }
    if rng.random() < rate("pacemaker", 0.3 if heart_failure else 0.10):
        positives["pacemaker"] = {
            "side": _choice(rng, ("left", "right"), (0.85, 0.15)),
            "leads": int(rng.integers(1, 3)),
        }
    return positives


def _sample_body(rng: np.random.Generator) -> Body:
    sex = _choice(rng, ("F", "M"))
    return Body(
        sex=sex,
        age=int(rng.integers(22, 92)),
        size=float(rng.uniform(0.88, 1.08)),
        fat=float(rng.uniform(0.0, 1.0)),
        inspiration=float(rng.uniform(0.0, 1.0)),
        normal_ctr=float(rng.uniform(0.38, 0.48)),
        rotation_deg=float(rng.uniform(-3.0, 3.0)),
        shift=float(rng.uniform(-0.02, 0.02)),
        breast_shadows=bool(sex == "F" and rng.random() < 0.7),
    )


def _sample_acquisition(rng: np.random.Generator, icu: bool, positives: dict[str, Any]) -> Acquisition:
    modality = _choice(rng, MODALITIES)
    bedside = icu or "endotracheal_tube" in positives
    view = "AP" if bedside or rng.random() < 0.2 else "PA"
    lateral = view == "PA" and rng.random() < 0.4
    photometric = "MONOCHROME1" if rng.random() < (0.35 if modality == "CR" else 0.15) else "MONOCHROME2"
    bits_stored = int(_choice(rng, BITS_STORED, (0.35, 0.3, 0.1, 0.25)))
    compressed = bool(rng.random() < 0.2)
    if modality == "DX":
        rescale: tuple[float, float] | None = DX_RESCALE
    else:
        rescale = _choice(rng, CR_RESCALES, (0.5, 0.3, 0.2))
    lut_allowed = voi_lut_allowed(bits_stored, rescale)
    voi = "lut" if lut_allowed and rng.random() < (0.3 if modality == "DX" else 0.1) else "window"
    aspect = float(_choice(rng, ASPECTS, (0.5, 0.3, 0.2)))
    return Acquisition(
        modality=modality,
        view=view,
        lateral=bool(lateral),
        photometric=photometric,
        bits_stored=bits_stored,
        compressed=compressed,
        voi=voi,
        rescale=rescale,
        aspect=aspect,
    )


def voi_lut_allowed(bits_stored: int, rescale: tuple[float, float] | None) -> bool:
    """A VOI LUT maps every stored value, so it is only sent with an identity Modality LUT and <= 14 bits."""
    return bits_stored <= 14 and rescale in (None, (1.0, 0.0))


def possible_acquisitions(aspect: float = ASPECTS[0]) -> Iterator[Acquisition]:
    """Every acquisition the sampler can draw (at one detector aspect): to check each encoding once."""
    for modality, view, photometric, bits_stored, compressed in itertools.product(
        MODALITIES, FRONTAL_VIEWS, PHOTOMETRICS, BITS_STORED, (False, True)
    ):
        for lateral in (False, True) if view == "PA" else (False,):
            for rescale in (DX_RESCALE,) if modality == "DX" else CR_RESCALES:
                for voi in VOIS if voi_lut_allowed(bits_stored, rescale) else ("window",):
                    yield Acquisition(
                        modality=modality,
                        view=view,
                        lateral=lateral,
                        photometric=photometric,
                        bits_stored=bits_stored,
                        compressed=compressed,
                        voi=voi,
                        rescale=rescale,
                        aspect=aspect,
                    )


def sample_case(
    rng: np.random.Generator, icu_rate: float = 0.16, scale: Mapping[str, float] | None = None
) -> Case:
    """A study's ground truth; `icu_rate` and `scale` (per-finding rate multipliers) shift the case mix."""
    icu = bool(rng.random() < icu_rate)
    positives = _sample_positives(rng, icu, scale)
    body = _sample_body(rng)
    acquisition = _sample_acquisition(rng, icu, positives)
    return make_case(positives, body, acquisition, icu=icu)
