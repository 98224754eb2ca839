"""The left lateral view of a `Case` (anterior to the image's left), the second image of a study.

The model reads the frontal image; the lateral exists so studies look like real PA + lateral
studies (two instances, view LL) and so loaders and the node handle multi-image studies. It still
shows what a lateral shows: the heart anteriorly, the spine posteriorly, effusions in the posterior
costophrenic sulcus, lesions, tubes and devices.
"""

from __future__ import annotations

import numpy as np

from echo.data.canvas import Canvas, smooth_path
from echo.data.case import Case
from echo.data.exposure import expose, low_frequency_field
from echo.data.phantom import METAL, image_shape
from echo.data.site import DetectorLook, expose_site
from echo.data.streams import component_rng

# Lobe positions on a lateral view: (x from front to back, y), anterior is negative x.
_LOBE_CENTERS: dict[str, tuple[float, float]] = {
    "right upper lobe": (-0.02, 0.24),
    "left upper lobe": (-0.08, 0.3),
    "right middle lobe": (-0.12, 0.5),
    "right lower lobe": (0.09, 0.58),
    "left lower lobe": (0.1, 0.62),
}


def draw_lateral(
    case: Case, size: int, seed: int, index: int, look: DetectorLook | None = None
) -> np.ndarray:
    """Float32 (H, W) display image in [0, 1], bright = dense; `look`: a site's detector."""

    def rng(component: str) -> np.random.Generator:
        return component_rng(seed, index, f"lateral:{component}")

    body = case.body
    height, width = image_shape(size, case.acquisition.aspect)
    canvas = Canvas(height, width, body.rotation_deg * 0.5, 0.0)
    geometry = rng("anatomy")
    depth = 0.27 * body.size + 0.03 * body.fat
    spine_x = depth - 0.15
    dome = 0.56 + 0.06 * body.inspiration + float(geometry.uniform(-0.015, 0.015))
    X, Y = canvas.grid
    shape = (height, width)

    outline = canvas.layer()
    outline.polygon(
        np.array(
            [
                (-0.07, -0.05),
                (0.1, -0.05),
                (0.2, 0.12),
                (depth + 0.01, 0.4),
                (depth, 1.05),
                (-depth, 1.05),
                (-depth - 0.01, 0.4),
                (-depth + 0.06, 0.12),
            ]
        )
    )
    trunk = outline.render(blur=0.008)
    tissue = (
        trunk * (1.05 + 0.25 * body.fat) * (0.7 + 0.3 * np.sqrt(np.clip(1 - (X / (depth + 0.02)) ** 2, 0, 1)))
    )

    lung_points = np.array(
        [
            (0.03, 0.1),
            (-0.1, 0.14),
            (-depth + 0.045, 0.24),
            (-depth + 0.05, dome + 0.06),
            (-0.05, dome),
            (0.08, dome + 0.05),
            (spine_x - 0.005, dome + 0.22),
            (spine_x - 0.01, 0.35),
            (0.1, 0.14),
        ]
    )
    lung_layer = canvas.layer()
    lung_layer.polygon(smooth_path(np.vstack([lung_points, lung_points[:1]]), samples=6))
    lungs = lung_layer.render(blur=0.008)

    ctr = float(case.detail("cardiomegaly", "ctr")) if "cardiomegaly" in case.positives else body.normal_ctr
    heart_layer = canvas.layer()
    heart_layer.ellipse((-depth * 0.38, dome - 0.05), (0.14 * (ctr / 0.45) ** 0.8, 0.1), angle_deg=-32.0)
    heart = heart_layer.render(blur=0.008)

    air = 0.6 * lungs * (1.0 + 0.06 * low_frequency_field(rng("texture"), height, width, cells=20))
    air = air * (1.0 - 0.8 * heart)
    airway = canvas.layer()
    airway.line(np.array([(0.0, -0.05), (0.02, 0.15), (0.04, 0.33)]), 0.035)
    air = np.maximum(air, 0.4 * airway.render(blur=0.004) * trunk)

    added = np.zeros(shape, np.float32)
    if "pleural_effusion" in case.positives:
        level = {"small": 0.12, "moderate": 0.22, "large": 0.34}[case.detail("pleural_effusion", "size")]
        fluid_layer = canvas.layer()
        x = np.linspace(-depth, depth, 20)
        meniscus = dome + 0.22 - level * (0.3 + 0.7 * ((x + depth) / (2 * depth)) ** 2)
        fluid_layer.polygon(np.vstack([np.stack([x, meniscus], axis=1), [(depth, 1.1), (-depth, 1.1)]]))
        air = air * (1.0 - 0.95 * fluid_layer.render(blur=0.01) * lungs)
    if "consolidation" in case.positives:
        cx, cy = _LOBE_CENTERS[case.detail("consolidation", "lobe")]
        blob = canvas.layer()
        draw = rng("consolidation")
        for _ in range(6):
            blob.ellipse((cx + float(draw.normal(0, 0.03)), cy + float(draw.normal(0, 0.03))), (0.05, 0.045))
        air = air * (1.0 - 0.8 * blob.render(blur=0.014) * lungs)
    if "edema" in case.positives:
        haze = np.exp(-(((X - 0.02) / 0.13) ** 2 + ((Y - 0.42) / 0.15) ** 2) / 2) * lungs
        air = air * (1.0 - 0.55 * haze)
    if "nodule" in case.positives:
        draw = rng("nodule")
        zone_y = {"upper": 0.25, "mid": 0.4, "lower": 0.52}[case.detail("nodule", "zone")]
        nx, ny, radius = float(draw.uniform(-0.08, 0.1)), zone_y + float(draw.uniform(-0.04, 0.04)), 0.018
        r2 = ((X - nx) ** 2 + (Y - ny) ** 2) / radius**2
        added = added + 0.5 * np.sqrt(np.clip(1 - r2, 0, 1)).astype(np.float32)

    bones = canvas.layer()
    draw = rng("skeleton")
    spacing = float(draw.uniform(0.04, 0.046))
    y = -0.05
    while y < 1.05:
        x0 = spine_x + 0.02 * np.sin(np.pi * min(max(y, 0.0), 1.0))
        bones.polygon(
            np.array(
                [(x0, y), (x0 + 0.07, y + 0.004), (x0 + 0.07, y + spacing * 0.8), (x0, y + spacing * 0.78)]
            ),
            0.5,
        )
        bones.ellipse((x0 + 0.1, y + spacing * 0.5), (0.014, 0.01), 0.35)
        y += spacing
    bones.line(np.array([(-depth + 0.035, 0.17), (-depth + 0.03, dome - 0.06)]), 0.016, 0.6)
    for k in range(7):
        ry = 0.2 + 0.07 * k
        bones.line(
            np.array([(spine_x + 0.02, ry), (0.0, ry + 0.06), (-depth + 0.06, ry + 0.16)]), 0.012, 0.25
        )
    bone = bones.render(blur=0.003)

    metal_layer = canvas.layer()
    if "endotracheal_tube" in case.positives:
        tip = 0.33 - int(case.detail("endotracheal_tube", "tip_cm")) / 43
        metal_layer.line(np.array([(-0.02, -0.05), (0.005, 0.12), (0.03, tip)]), 0.005, 0.6)
    if "central_line" in case.positives:
        metal_layer.line(
            smooth_path([(-0.02, -0.05), (-0.03, 0.2), (-0.04, 0.36), (-0.045, 0.43)]), 0.0045, 0.7
        )
    if "pacemaker" in case.positives:
        can = (-depth - 0.005, 0.24)
        metal_layer.ellipse(can, (0.012, 0.04), 1.0)
        metal_layer.line(smooth_path([can, (-0.08, 0.2), (-0.04, 0.36), (-0.1, dome - 0.04)]), 0.0045, 0.95)
    metal = metal_layer.render(blur=0.0012)

    density = tissue * (1.0 - np.clip(air, 0.0, 0.97)) + added + 0.5 * bone * trunk + METAL * metal
    density = density.astype(np.float32)
    return expose(density, rng("exposure")) if look is None else expose_site(density, rng("exposure"), look)
