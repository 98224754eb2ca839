"""The drawn findings of the lungs and pleura, each sized to stay visible at the model's ~224 px.

Each function returns masks in [0, 1] that the phantom turns into density: fluid and
consolidation replace air, a pneumothorax replaces lung with free air (no markings) behind a thin
visceral pleural line, a nodule adds a round soft-tissue ball, edema adds perihilar haze with
Kerley-like lines. Sizes and places follow the case's details (side, size, lobe, zone, severity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from echo.data.anatomy import SIGN, Thorax, heart_outline
from echo.data.canvas import Canvas, mirror


def _sides(side: str) -> tuple[str, ...]:
    return ("right", "left") if side == "bilateral" else (side,)


def effusion_mask(
    canvas: Canvas, th: Thorax, lungs: dict[str, np.ndarray], details: Any, rng: np.random.Generator
) -> np.ndarray:
    """Dependent fluid with a meniscus: higher along the lateral wall, blunting the costophrenic angle."""
    _, Y = canvas.grid
    total = np.zeros((canvas.height, canvas.width), np.float32)
    for side in _sides(details["side"]):
        dome, angle = th.dome_y[side], th.angle_y[side]
        size = details["size"]
        if size == "small":
            top_lateral = angle - float(rng.uniform(0.08, 0.11))
            top_medial = dome + 0.04
        elif size == "moderate":
            top_lateral = dome - float(rng.uniform(0.09, 0.13))
            top_medial = dome - float(rng.uniform(0.0, 0.03))
        else:
            top_lateral = dome - float(rng.uniform(0.21, 0.28))
            top_medial = dome - float(rng.uniform(0.11, 0.16))
        med, lat = th.mediastinum - 0.03, th.inner_half_width + 0.03
        x = np.linspace(med, lat, 24)
        rise = ((x - med) / (lat - med)) ** 2.2
        curve = np.stack([x, top_medial - (top_medial - top_lateral) * rise], axis=1)
        polygon = np.vstack([curve, [(lat, 1.1), (med, 1.1)]])
        layer = canvas.layer()
        layer.polygon(mirror(polygon, SIGN[side]))
        # Fluid layering in the posterior recess veils the lung base and effaces the hemidiaphragm.
        veil = 0.45 * np.clip((Y - (dome - 0.05)) / 0.09, 0.0, 1.0)
        total = np.maximum(total, np.maximum(layer.render(blur=0.008), veil) * lungs[side])
    return total


@dataclass(frozen=True)
class Pneumothorax:
    space: np.ndarray  # free pleural air (no lung, no markings)
    lung: np.ndarray  # the collapsed lung on that side
    pleural_line: np.ndarray  # the visceral pleural line


def pneumothorax(
    canvas: Canvas, th: Thorax, outline: np.ndarray, lung: np.ndarray, details: Any, rng: np.random.Generator
) -> Pneumothorax:
    """The lung retracts toward its hilum and base, leaving a lucent rim along the apex and lateral wall."""
    side = details["side"]
    low, high = {"small": (0.8, 0.86), "moderate": (0.68, 0.76), "large": (0.52, 0.62)}[details["size"]]
    k = float(rng.uniform(low, high))
    hilum_x = th.hila[side][0]
    base_y = th.angle_y[side]
    collapsed = np.array(outline, dtype=np.float64)
    lateral_of_hilum = np.abs(collapsed[:, 0]) > abs(hilum_x)
    collapsed[lateral_of_hilum, 0] = hilum_x + (collapsed[lateral_of_hilum, 0] - hilum_x) * k
    collapsed[:, 1] = base_y - (base_y - collapsed[:, 1]) * (1 - (1 - k) * 0.75)
    fill = canvas.layer()
    fill.polygon(collapsed)
    collapsed_mask = fill.render(blur=0.002) * lung
    edge = canvas.layer()
    edge.line(np.vstack([collapsed, collapsed[:1]]), 0.0035)
    inner_lung = np.clip((lung - 0.6) / 0.4, 0.0, 1.0)  # keep the line off the lung's own border
    return Pneumothorax(
        space=np.clip(lung - collapsed_mask, 0.0, 1.0),
        lung=collapsed_mask,
        pleural_line=edge.render(blur=0.001) * inner_lung,
    )


_LOBE_ZONES: dict[str, tuple[str, float, float, float, float]] = {
    # lobe: side, (y from, y to) as fractions of apex..dome, (x from, x to) as fractions of mediastinum..wall
    "right upper lobe": ("right", 0.08, 0.42, 0.15, 0.9),
    "right middle lobe": ("right", 0.5, 0.86, 0.0, 0.5),
    "right lower lobe": ("right", 0.6, 1.05, 0.35, 0.95),
    "left upper lobe": ("left", 0.08, 0.5, 0.2, 0.9),
    "left lower lobe": ("left", 0.62, 1.05, 0.35, 0.95),
}


def consolidation_masks(
    canvas: Canvas, th: Thorax, lungs: dict[str, np.ndarray], details: Any, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(opacity, air bronchograms): overlapping airspace blobs confined to the lobe's zone."""
    side, y0, y1, x0, x1 = _LOBE_ZONES[details["lobe"]]
    sign = SIGN[side]
    med = th.mediastinum if details["lobe"] != "right middle lobe" else abs(th.heart_right) - 0.03
    lat = th.inner_half_width
    span_y = th.dome_y[side] - th.apex_y
    top, bottom = th.apex_y + y0 * span_y, th.apex_y + y1 * span_y
    left, right = med + x0 * (lat - med), med + x1 * (lat - med)
    zone = canvas.layer()
    zone.polygon(
        mirror(
            np.array(
                [(left - 0.04, top), (right + 0.06, top), (right + 0.06, bottom), (left - 0.04, bottom)]
            ),
            sign,
        )
    )
    center = (
        float(rng.uniform(left + 0.25 * (right - left), right - 0.25 * (right - left))),
        float(rng.uniform(top + 0.3 * (bottom - top), bottom - 0.3 * (bottom - top))),
    )
    blobs = canvas.layer()
    for _ in range(int(rng.integers(6, 10))):
        cx = center[0] + float(rng.normal(0.0, 0.03))
        cy = center[1] + float(rng.normal(0.0, 0.03))
        blobs.ellipse((sign * cx, cy), (float(rng.uniform(0.035, 0.06)), float(rng.uniform(0.03, 0.055))))
    opacity = np.clip(blobs.render(blur=0.014) * 1.5, 0.0, 1.0) * zone.render(blur=0.006) * lungs[side]
    bronchi = canvas.layer()
    hilum = np.array(th.hila[side])
    for _ in range(3):
        target = np.array(
            [sign * (center[0] + float(rng.normal(0.0, 0.04))), center[1] + float(rng.normal(0.0, 0.04))]
        )
        start = hilum + (target - hilum) * 0.55
        bronchi.line(np.array([start, target]), 0.005)
    return opacity, bronchi.render(blur=0.002) * opacity


def _heart_reach(th: Thorax, y: float, side: str) -> float:
    """How far the heart extends toward `side` at height y (0 where it does not reach)."""
    outline = heart_outline(th)
    sign = SIGN[side]
    near = outline[np.abs(outline[:, 1] - y) < 0.025, 0] * sign
    return float(near.max()) if near.size and near.max() > 0 else 0.0


def nodule_density(canvas: Canvas, th: Thorax, details: Any, rng: np.random.Generator) -> np.ndarray:
    """A round, well-defined soft-tissue ball (thickest through its centre) in one lung zone."""
    side, zone = details["side"], details["zone"]
    span = th.dome_y[side] - th.apex_y
    y0, y1 = {"upper": (0.12, 0.33), "mid": (0.4, 0.58), "lower": (0.64, 0.78)}[zone]
    y = th.apex_y + float(rng.uniform(y0, y1)) * span
    radius = float(rng.uniform(0.015, 0.024))
    lat = float(th.lateral_wall(y, side))
    med = max(th.mediastinum, _heart_reach(th, y, side))  # keep clear of the heart where the lung allows
    low, high = med + 0.3 * (lat - med) + radius, lat - 0.03 - radius
    if high - low < 0.01:  # a large heart leaves little lung beside it: use the lateral band anyway
        low, high = lat - 0.09, lat - 0.03 - radius
    x = SIGN[side] * float(rng.uniform(low, high))
    X, Y = canvas.grid
    r2 = ((X - x) ** 2 + (Y - y) ** 2) / radius**2
    ball = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))
    edge = np.clip((1.15 - np.sqrt(r2)) / 0.15, 0.0, 1.0) * 0.25  # slightly soft rim
    return np.maximum(ball, edge * (r2 < 1.33)).astype(np.float32) * float(rng.uniform(0.5, 0.65))


def edema_masks(
    canvas: Canvas, th: Thorax, lungs: np.ndarray, details: Any, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(haze, interstitial lines): bilateral perihilar 'bat wing' haze, basal haze, Kerley-like lines."""
    moderate = details["severity"] == "moderate"
    X, Y = canvas.grid
    haze = np.zeros_like(X)
    sx, sy = (0.12, 0.15) if moderate else (0.095, 0.12)
    for side, sign in SIGN.items():
        hx, hy = th.hila[side]
        cx, cy = hx + sign * 0.035, hy + 0.03
        haze = np.maximum(haze, np.exp(-(((X - cx) / sx) ** 2 + ((Y - cy) / sy) ** 2) / 2))
    basal = np.clip((Y - th.carina[1]) / (th.dome_y["right"] - th.carina[1]), 0.0, 1.0)
    strength = float(rng.uniform(0.6, 0.72) if moderate else rng.uniform(0.45, 0.55))
    haze = (strength * haze + 0.22 * basal) * lungs
    lines = canvas.layer()
    for side, sign in SIGN.items():
        for _ in range(int(rng.integers(6, 11))):
            y = float(rng.uniform(th.dome_y[side] - 0.17, th.angle_y[side] - 0.02))
            wall = float(th.lateral_wall(y, side))
            length = float(rng.uniform(0.022, 0.04))
            lines.line(
                mirror(np.array([(wall + 0.01, y), (wall - length, y + float(rng.normal(0, 0.003)))]), sign),
                0.003,
            )
    return np.clip(haze, 0.0, 0.95), lines.render(blur=0.0012) * lungs
