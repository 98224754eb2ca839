"""A site shift: how one hospital's studies differ from the bundled training data.

`echo-train make-synthetic --site NAME` writes studies as another site would send them:

- another detector look (`DetectorLook`): the vendor's tone curve and edge enhancement, more quantum
  noise with a correlated grain, collimator shutters at the borders, and on some images text burned
  into the pixels (a side marker, "PORTABLE", the acquisition date), flagged in the header
  (BurnedInAnnotation "YES");
- another case mix (`Prevalence`): more ICU patients, other finding rates (`case.sample_case`);
- another house reporting style (`HouseStyle`, written by `echo.data.site_reports`).

Where the parameters come from: a small table of named presets (`PRESETS`: "riverside", the
strong shift the docs measure, and "lakeside", a mild one), and for any other name a fallback
derived from the SHA-256 of the name (`derived_profile`), drawn from ranges that always differ
visibly from the default. Either way a name always gives the same shift, on any machine.

A site's studies draw every per-study random stream, UID and accession number from
`stream_seed(seed, site)`, so they never repeat a default study's (or another site's) identifiers.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from echo.data.exposure import low_frequency_field
from echo.errors import UserError
from echo.findings import FINDINGS, REGIONS

SITE_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
SITE_SEED_LIMIT = 2**32  # a site's seeds stay below it, so its streams never meet a default seed's


class SiteNameError(UserError):
    """A site name that cannot name a site (the message says what is allowed)."""


def check_site_name(name: str) -> str:
    if not SITE_NAME.fullmatch(name):
        raise SiteNameError(
            f"--site must be 1-32 characters of lower-case letters, digits and '-', "
            f"starting with a letter, got {name!r}"
        )
    return name


def stream_seed(seed: int, site: str | None) -> int:
    """The seed a study's random streams and identifiers use: `seed` itself without a site."""
    if site is None:
        return seed
    if not 0 <= seed < SITE_SEED_LIMIT:
        raise ValueError(f"a site's seed must be 0-{SITE_SEED_LIMIT - 1}, got {seed}")
    return seed + (zlib.crc32(site.encode("utf-8")) + 1) * SITE_SEED_LIMIT


@dataclass(frozen=True)
class DetectorLook:
    """How the site's detector and its processing render the same density."""

    shoulder: tuple[float, float]  # range of the film-like curve's shoulder (default 1.35-1.75)
    gamma: float  # display ** gamma after the curve: < 1 flattens the lungs, > 1 darkens them
    edge_gain: float  # unsharp-mask amount of the vendor's processing (0: none)
    edge_radius: float  # its radius, in image heights
    noise: tuple[float, float]  # quantum noise sigma range (default 0.006-0.02)
    grain: float  # correlated, blotchy noise amplitude
    collimation_rate: float  # share of images with collimator shutters at the borders
    collimation: tuple[float, float]  # shutter width range, fraction of each side
    shutter: float  # display value of the shuttered border (1.0: white, unexposed)
    overlay_rate: float  # share of frontal images with text burned into the pixels


@dataclass(frozen=True)
class Prevalence:
    """The site's case mix: ICU share and multipliers of the default per-finding rates."""

    icu: float  # default 0.16
    scale: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.scale) - set(FINDINGS)
        if unknown:
            raise ValueError(f"unknown finding(s) in prevalence scale: {sorted(unknown)}")
        object.__setattr__(self, "scale", MappingProxyType(dict(self.scale)))


@dataclass(frozen=True)
class HouseStyle:
    """How the site's radiologists write (see `echo.data.site_reports`)."""

    order: tuple[str, ...]  # the house order of the findings' regions
    other_order_rate: float  # share of reports in another order
    structured_rate: float  # share of reports with labelled subsections ("LUNGS: Clear.")
    abbreviation_rate: float  # share of facts written with abbreviations (ETT, PTX, b/l, CVC ...)
    technique_rate: float  # share of reports opening with a technique sentence
    numbered_impression: bool  # impressions with several items as "1. ... 2. ..."
    phrasing: int  # seed of the site's own subset of phrasings

    def __post_init__(self) -> None:
        if sorted(self.order) != sorted(REGIONS):
            raise ValueError(f"order must be a permutation of {REGIONS}, got {self.order}")


@dataclass(frozen=True)
class SiteProfile:
    name: str
    look: DetectorLook
    prevalence: Prevalence
    style: HouseStyle

    @property
    def institution(self) -> str:
        return f"{self.name.upper()} (SYNTHETIC)"[:64]


PRESETS: dict[str, SiteProfile] = {
    "riverside": SiteProfile(
        name="riverside",
        look=DetectorLook(
            shoulder=(0.8, 1.0),
            gamma=0.55,
            edge_gain=1.6,
            edge_radius=0.012,
            noise=(0.035, 0.06),
            grain=0.025,
            collimation_rate=0.85,
            collimation=(0.05, 0.14),
            shutter=1.0,
            overlay_rate=0.6,
        ),
        prevalence=Prevalence(
            icu=0.45,
            scale={
                "cardiomegaly": 1.5,
                "edema": 2.0,
                "pleural_effusion": 1.9,
                "consolidation": 1.2,
                "nodule": 0.5,
                "central_line": 1.5,
                "pacemaker": 1.6,
            },
        ),
        style=HouseStyle(
            order=("devices", "lungs", "pleura", "heart", "mediastinum", "airway_hila", "bones"),
            other_order_rate=0.2,
            structured_rate=0.5,
            abbreviation_rate=0.7,
            technique_rate=0.8,
            numbered_impression=True,
            phrasing=1,
        ),
    ),
    "lakeside": SiteProfile(
        name="lakeside",
        look=DetectorLook(
            shoulder=(1.2, 1.5),
            gamma=1.25,
            edge_gain=0.5,
            edge_radius=0.01,
            noise=(0.015, 0.03),
            grain=0.015,
            collimation_rate=0.4,
            collimation=(0.03, 0.08),
            shutter=1.0,
            overlay_rate=0.3,
        ),
        prevalence=Prevalence(icu=0.25, scale={"pleural_effusion": 1.3, "nodule": 1.4}),
        style=HouseStyle(
            order=("heart", "mediastinum", "lungs", "pleura", "airway_hila", "bones", "devices"),
            other_order_rate=0.3,
            structured_rate=0.0,
            abbreviation_rate=0.4,
            technique_rate=0.3,
            numbered_impression=False,
            phrasing=2,
        ),
    ),
}


def derived_profile(name: str) -> SiteProfile:
    """A site's parameters drawn from the SHA-256 of its name: always the same for one name."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big"))

    def between(low: float, high: float) -> float:
        return float(rng.uniform(low, high))

    flat = rng.random() < 0.5  # a flat (gamma < 1) or a dark, contrasty (gamma > 1) look
    shoulder_low = between(0.8, 1.2)
    look = DetectorLook(
        shoulder=(shoulder_low, shoulder_low + 0.2),
        gamma=between(0.5, 0.7) if flat else between(1.35, 1.7),
        edge_gain=between(0.6, 1.6),
        edge_radius=between(0.008, 0.016),
        noise=(between(0.025, 0.035), between(0.045, 0.06)),
        grain=between(0.02, 0.05),
        collimation_rate=between(0.5, 0.9),
        collimation=(between(0.03, 0.05), between(0.09, 0.14)),
        shutter=1.0 if rng.random() < 0.8 else 0.0,
        overlay_rate=between(0.3, 0.7),
    )
    scale = {finding: between(0.5, 2.0) for finding in FINDINGS}
    prevalence = Prevalence(icu=between(0.25, 0.45), scale=scale)
    order = list(REGIONS)
    rng.shuffle(order)
    style = HouseStyle(
        order=tuple(order),
        other_order_rate=between(0.1, 0.3),
        structured_rate=between(0.0, 0.6),
        abbreviation_rate=between(0.3, 0.8),
        technique_rate=between(0.2, 0.9),
        numbered_impression=bool(rng.random() < 0.5),
        phrasing=int(rng.integers(1, 2**31)),
    )
    return SiteProfile(name=name, look=look, prevalence=prevalence, style=style)


def site_profile(name: str) -> SiteProfile:
    """The preset of that name, else the profile derived from the name."""
    check_site_name(name)
    return PRESETS.get(name) or derived_profile(name)


# --- the detector look ------------------------------------------------------------------------


def _blur(image: np.ndarray, radius_px: float) -> np.ndarray:
    """A smooth low-pass (down- then up-sampling), enough for an unsharp mask."""
    height, width = image.shape
    factor = max(1.0, radius_px)
    small = (max(2, int(round(width / factor))), max(2, int(round(height / factor))))
    reduced = Image.fromarray(image.astype(np.float32), mode="F").resize(small, Image.Resampling.BOX)
    return np.asarray(reduced.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)


def expose_site(density: np.ndarray, rng: np.random.Generator, look: DetectorLook) -> np.ndarray:
    """Like `exposure.expose`, through the site's curve, processing and noise. Float32 in [0, 1]."""
    height, width = density.shape
    gain = float(rng.uniform(0.85, 1.15))
    shoulder = float(rng.uniform(*look.shoulder))
    heel = 1.0 + 0.06 * low_frequency_field(rng, height, width, cells=4)
    signal = np.maximum(density * gain * heel, 0.0)
    display = (1.0 - np.exp(-shoulder * signal)) / (1.0 - np.exp(-shoulder * 1.9))
    display = (np.clip(display, 0.0, 1.0) ** look.gamma).astype(np.float32)
    if look.edge_gain > 0:
        display = display + look.edge_gain * (display - _blur(display, look.edge_radius * height))
    sigma = float(rng.uniform(*look.noise))
    noise = rng.standard_normal((height, width), dtype=np.float32)
    grain = low_frequency_field(rng, height, width, cells=max(8, height // 4))
    display = display + sigma * (0.5 + np.clip(display, 0.0, 1.0)) * noise + look.grain * grain
    return np.clip(display, 0.0, 1.0).astype(np.float32)


def collimate(display: np.ndarray, rng: np.random.Generator, look: DetectorLook) -> np.ndarray:
    """Shutter the borders (a slightly tilted field with a soft edge), on `collimation_rate` of images."""
    if rng.random() >= look.collimation_rate:
        return display
    height, width = display.shape
    left, right, top, bottom = (float(rng.uniform(*look.collimation)) for _ in range(4))
    top, bottom = top * 0.6, bottom * 0.5  # the apices and costophrenic angles stay in the field
    tilt = np.deg2rad(float(rng.uniform(-2.0, 2.0)))
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = rows / height - 0.5, cols / width - 0.5
    u = x * np.cos(tilt) - y * np.sin(tilt) * height / width
    v = y * np.cos(tilt) + x * np.sin(tilt) * width / height
    edge = 1.5 / height  # soft edge: a pixel and a half
    inside = (
        np.clip((u + 0.5 - left) / edge, 0, 1)
        * np.clip((0.5 - right - u) / edge, 0, 1)
        * np.clip((v + 0.5 - top) / edge, 0, 1)
        * np.clip((0.5 - bottom - v) / edge, 0, 1)
    )
    border = look.shutter + 0.02 * rng.standard_normal(display.shape, dtype=np.float32)
    return np.clip(display * inside + border * (1.0 - inside), 0.0, 1.0).astype(np.float32)


def overlay_texts(rng: np.random.Generator, view: str, study_date: str, study_time: str) -> list[str]:
    """What the site's technologists burn in: a side marker, the technique, the date."""
    texts = ["L"]
    if view == "AP" and rng.random() < 0.8:
        texts.append(str(rng.choice(["PORTABLE", "AP PORTABLE", "SUPINE", "SEMI-ERECT"])))
    elif rng.random() < 0.4:
        texts.append(str(rng.choice(["UPRIGHT", "ERECT", "PA"])))
    if rng.random() < 0.7:
        texts.append(
            f"{study_date[:4]}-{study_date[4:6]}-{study_date[6:8]} {study_time[:2]}:{study_time[2:4]}"
        )
    return texts


def burn_in(display: np.ndarray, texts: list[str], rng: np.random.Generator) -> np.ndarray:
    """Draw `texts` into the pixels, white with a black outline (legible on the shutter and on
    the lungs alike): the side marker in one upper corner, the rest in the other."""
    height, width = display.shape
    footprint, ink = (Image.new("L", (width, height), 0) for _ in range(2))
    outline, letters = ImageDraw.Draw(footprint), ImageDraw.Draw(ink)
    stroke = max(1, height // 256)
    marker_font = ImageFont.load_default(size=max(10, int(height * 0.08)))
    text_font = ImageFont.load_default(size=max(8, int(height * 0.05)))
    margin = int(height * 0.03)

    def put(xy: tuple[int, int], text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> None:
        outline.text(xy, text, fill=255, font=font, stroke_width=stroke, stroke_fill=255)
        letters.text(xy, text, fill=255, font=font)

    marker, *others = texts
    marker_right = rng.random() < 0.7
    put((width - margin - int(height * 0.06) if marker_right else margin, margin), marker, marker_font)
    y = margin
    for text in others:
        x = margin if marker_right else width - margin - int(outline.textlength(text, font=text_font))
        put((x, y), text, text_font)
        y += int(height * 0.06)
    cover = np.asarray(footprint, dtype=np.float32) / 255.0
    white = np.asarray(ink, dtype=np.float32) / 255.0 * float(rng.uniform(0.9, 1.0))
    return np.clip(display * (1.0 - cover) + white, 0.0, 1.0).astype(np.float32)
