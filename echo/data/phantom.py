"""The frontal chest radiograph of a `Case`: anatomy, findings and devices composed as density.

Density model (log-domain, arbitrary units): soft tissue along each ray (thicker through the middle
of the trunk) times the fraction of that ray that is NOT air, plus bone, plus lesions that add
tissue, plus metal. Lungs are mostly air; the heart, fluid, consolidation and edema replace air;
a pneumothorax replaces lung with pure air. `exposure.expose` turns density into the display image.

Every component draws from its own random stream (`streams.component_rng`), so `case.without(x)`
changes only the pixels of finding x.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from echo.data import devices, lesions
from echo.data.anatomy import Thorax, body_outline, build_thorax, heart_outline, lung_outline
from echo.data.canvas import Canvas, ellipse_points, mirror
from echo.data.case import Body, Case
from echo.data.exposure import expose, low_frequency_field
from echo.data.site import DetectorLook, expose_site
from echo.data.skeleton import draw_skeleton
from echo.data.streams import component_rng
from echo.data.vessels import draw_vessels

LUNG_AIR = 0.64  # fraction of the ray through an aerated lung that is air
METAL = 2.2  # density of a fully radiopaque device pixel


def image_shape(size: int, aspect: float) -> tuple[int, int]:
    """(height, width): `size` is the height; the width follows the detector's aspect, kept even."""
    return size, max(16, int(round(size * aspect / 2)) * 2)


@dataclass(frozen=True)
class Frontal:
    pixels: np.ndarray  # float32 (H, W) display image in [0, 1], bright = dense
    thorax: Thorax


def _ctr(case: Case) -> float:
    if "cardiomegaly" in case.positives:
        return float(case.detail("cardiomegaly", "ctr"))
    return case.body.normal_ctr


def _soft_tissue(canvas: Canvas, th: Thorax, body: Body) -> tuple[np.ndarray, np.ndarray]:
    """(trunk mask, tissue path length): an elliptical trunk, arms at the sides, breast shadows."""
    X, _ = canvas.grid
    outline = canvas.layer()
    outline.polygon(body_outline(th))
    trunk = outline.render(blur=0.006)
    profile = np.sqrt(np.clip(1.0 - (X / (th.body_half_width * 1.05)) ** 2, 0.0, 1.0))
    tissue = trunk * (0.9 + 0.25 * body.fat) * (0.5 + 0.5 * profile)
    arms = canvas.layer()
    x0, y0 = th.body_half_width + 0.012, th.shoulder_y
    arm = np.array([(x0, y0), (x0 + 0.14, y0 + 0.04), (x0 + 0.12, 1.1), (x0 + 0.02, 1.1)])
    for sign in (-1, 1):
        arms.polygon(mirror(arm, sign))
    tissue = tissue + 0.55 * arms.render(blur=0.01)
    if body.breast_shadows:
        breasts = canvas.layer()
        for sign in (-1, 1):
            breasts.ellipse((sign * th.inner_half_width * 0.6, th.dome_y["right"] + 0.02), (0.15, 0.1))
        tissue = tissue + 0.14 * breasts.render(blur=0.03)
    return trunk, tissue


def _airway_and_gas(canvas: Canvas, th: Thorax) -> tuple[np.ndarray, np.ndarray]:
    """(trachea and main bronchi, gastric bubble) masks."""
    airway = canvas.layer()
    cx, cy = th.carina
    airway.line(np.array([(cx * 0.3, -0.05), (cx * 0.6, cy * 0.5), (cx, cy)]), 0.032)
    airway.line(np.array([(cx, cy), (th.hila["right"][0] * 0.75, th.hila["right"][1] - 0.005)]), 0.02)
    airway.line(np.array([(cx, cy), (th.hila["left"][0] * 0.75, th.hila["left"][1] + 0.01)]), 0.018)
    gas = canvas.layer()
    gas.polygon(ellipse_points((0.12, th.dome_y["left"] + 0.05), (0.045, 0.026)))
    return airway.render(blur=0.004), gas.render(blur=0.006)


def _metal(canvas: Canvas, th: Thorax, case: Case, rng: Callable[[str], np.random.Generator]) -> np.ndarray:
    layer = canvas.layer()
    for name, draw in (
        ("pacemaker", devices.draw_pacemaker),
        ("central_line", devices.draw_central_line),
        ("endotracheal_tube", devices.draw_endotracheal_tube),
    ):
        if name in case.positives:
            draw(layer, th, case.positives[name], rng(name))
    return layer.render(blur=0.0012)


def draw_frontal(case: Case, size: int, seed: int, index: int, look: DetectorLook | None = None) -> Frontal:
    """The frontal image; `look` renders it as a site's detector would (`echo.data.site`)."""

    def rng(component: str) -> np.random.Generator:
        return component_rng(seed, index, f"frontal:{component}")

    body, positives = case.body, case.positives
    height, width = image_shape(size, case.acquisition.aspect)
    shape = (height, width)
    canvas = Canvas(height, width, body.rotation_deg, body.shift)
    th = build_thorax(body, _ctr(case), rng("anatomy"), width / height)
    trunk, tissue = _soft_tissue(canvas, th, body)

    outlines = {side: lung_outline(th, side) for side in ("right", "left")}
    lungs: dict[str, np.ndarray] = {}
    for side, points in outlines.items():
        layer = canvas.layer()
        layer.polygon(points)
        lungs[side] = layer.render(blur=0.005)
    heart_layer = canvas.layer()
    heart_layer.polygon(heart_outline(th))
    heart = heart_layer.render(blur=0.006)

    # A pneumothorax comes first: it decides where aerated lung (and its markings) still is.
    aerated = dict(lungs)
    free_air = np.zeros(shape, np.float32)
    pleural_line = np.zeros(shape, np.float32)
    if "pneumothorax" in positives:
        details = positives["pneumothorax"]
        side = details["side"]
        ptx = lesions.pneumothorax(canvas, th, outlines[side], lungs[side], details, rng("pneumothorax"))
        aerated[side], free_air, pleural_line = ptx.lung, ptx.space, ptx.pleural_line
    lung_field = np.clip(aerated["right"] + aerated["left"], 0.0, 1.0)

    edema = positives.get("edema")  # blurs the markings and makes upper-zone vessels prominent
    vessels = draw_vessels(canvas, th, rng("vessels"), upper_gain=1.35 if edema else 1.0)
    markings = vessels.render(blur=0.005 if edema else 0.0025) * lung_field
    texture = 1.0 + 0.07 * low_frequency_field(rng("texture"), height, width, cells=24)
    airway, gas = _airway_and_gas(canvas, th)
    air = LUNG_AIR * lung_field * texture * (1.0 - 0.45 * markings) * (1.0 - 0.82 * heart) + 0.93 * free_air
    air = np.maximum(air, 0.42 * airway * trunk)
    air = np.maximum(air, 0.5 * gas * trunk)

    # Findings that replace air (fluid, airspace disease, edema) or add tissue (nodule, pleural line).
    if "pleural_effusion" in positives:
        fluid = lesions.effusion_mask(
            canvas, th, lungs, positives["pleural_effusion"], rng("pleural_effusion")
        )
        air = air * (1.0 - 0.97 * fluid)
    if "consolidation" in positives:
        details = positives["consolidation"]
        opacity, bronchograms = lesions.consolidation_masks(
            canvas, th, aerated, details, rng("consolidation")
        )
        air = air * (1.0 - 0.9 * opacity) + 0.3 * bronchograms * LUNG_AIR
    if edema:
        haze, kerley = lesions.edema_masks(canvas, th, lung_field, edema, rng("edema"))
        air = air * (1.0 - haze) * (1.0 - 0.5 * kerley)
    added = 0.28 * pleural_line
    if "nodule" in positives:
        added = added + lesions.nodule_density(canvas, th, positives["nodule"], rng("nodule"))

    girdle, posterior_ribs, anterior_ribs = draw_skeleton(
        canvas, th, rng("skeleton"), case.acquisition.view == "AP"
    )
    bone = 0.5 * girdle + 0.5 * posterior_ribs + 0.3 * anterior_ribs
    metal = _metal(canvas, th, case, rng)

    density = tissue * (1.0 - np.clip(air, 0.0, 0.97)) + added + bone * (0.4 + 0.6 * trunk) + METAL * metal
    density = density.astype(np.float32)
    pixels = expose(density, rng("exposure")) if look is None else expose_site(density, rng("exposure"), look)
    return Frontal(pixels=pixels, thorax=th)
