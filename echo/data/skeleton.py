"""Bones of the frontal chest: spine, posterior and anterior ribs, clavicles, scapulae, humeral heads.

Bones are drawn as bands with a brighter cortex (the band is filled, then its core is redrawn a
little less dense), the way cortical bone outlines ribs on a radiograph.
"""

from __future__ import annotations

import numpy as np

from echo.data.anatomy import SIGN, Thorax
from echo.data.canvas import Canvas, Layer, mirror, smooth_path


def _cortical_band(layer: Layer, path: np.ndarray, width: float, value: float) -> None:
    layer.line(path, width, value)
    layer.line(path, width * 0.5, value * 0.7)


def draw_spine(layer: Layer, th: Thorax, rng: np.random.Generator) -> None:
    spacing = float(rng.uniform(0.04, 0.046))
    y = th.apex_y - 0.12 - float(rng.uniform(0.0, spacing))
    while y < 1.05:
        half = 0.03 + 0.008 * min(max((y - 0.1) / 0.8, 0.0), 1.0)  # vertebrae widen downward
        body = np.array([(-half, y), (half, y), (half, y + spacing * 0.78), (-half, y + spacing * 0.78)])
        layer.polygon(body, 0.26)
        for sign in (-1, 1):
            layer.ellipse((sign * half * 0.72, y + spacing * 0.3), (0.006, 0.009), 0.45)
        layer.ellipse((0.0, y + spacing * 0.65), (0.005, 0.01), 0.35)
        y += spacing


def draw_ribs(
    posterior: Layer, anterior: Layer, th: Thorax, rng: np.random.Generator, count: int = 10
) -> None:
    gap = (th.dome_y["right"] - th.apex_y + 0.1) / (count + 0.5)
    width = float(rng.uniform(0.016, 0.02))
    for side, sign in SIGN.items():
        for k in range(count):
            y0 = th.apex_y - 0.015 + k * gap + (0.008 if side == "left" else 0.0)
            lateral = float(th.lateral_wall(y0 + 0.06, side)) + th.wall * 0.35
            t = np.linspace(0.0, 1.0, 12)
            x = 0.03 + t * (lateral - 0.03)
            y = y0 - 0.022 * np.sin(np.pi * t * 0.8) + 0.075 * t**2 + 0.05 * t**5
            back = mirror(np.stack([x, y], axis=1), sign)
            _cortical_band(posterior, back, width, 0.5)
            # Anterior rib: from the lateral turn medially and down, fading toward the cartilage.
            s = np.linspace(0.0, 1.0, 8)
            ax = lateral - s * (lateral - 0.09) * 0.85
            ay = y[-1] + 0.012 + 0.12 * s
            front = mirror(np.stack([ax, ay], axis=1), sign)
            anterior.line(front, width * 1.15, 0.35)


def draw_clavicles(layer: Layer, th: Thorax, rng: np.random.Generator) -> None:
    lift = float(rng.uniform(-0.015, 0.015))
    for sign in (-1, 1):
        control = np.array(
            [(0.035, 0.185), (0.1, 0.172), (0.18, 0.148), (0.25, 0.128), (0.31, 0.134)]
        ) + np.array([0.0, th.shoulder_y - 0.12 + lift])
        path = smooth_path(mirror(control, sign), samples=6)
        _cortical_band(layer, path, 0.024, 0.85)


def draw_shoulder_girdle(layer: Layer, th: Thorax, ap_view: bool) -> None:
    """Humeral heads always; the scapulae overlap the lungs on AP views (arms not rotated forward)."""
    for sign in (-1, 1):
        head = (sign * (th.body_half_width + 0.012), th.shoulder_y + 0.045)
        layer.ellipse(head, (0.052, 0.058), 0.62)
        if ap_view:
            lat = th.inner_half_width
            blade = np.array(
                [
                    (lat - 0.07, th.shoulder_y + 0.04),
                    (lat + 0.03, th.shoulder_y + 0.02),
                    (lat + 0.01, th.shoulder_y + 0.2),
                    (lat - 0.05, th.shoulder_y + 0.3),
                ]
            )
            layer.polygon(mirror(blade, sign), 0.22)


def draw_skeleton(
    canvas: Canvas, th: Thorax, rng: np.random.Generator, ap_view: bool
) -> tuple[np.ndarray, ...]:
    """(spine and girdle, posterior ribs, anterior ribs) bone masks in [0, 1]."""
    girdle = canvas.layer()
    draw_shoulder_girdle(girdle, th, ap_view)
    draw_spine(girdle, th, rng)
    draw_clavicles(girdle, th, rng)
    posterior, anterior = canvas.layer(), canvas.layer()
    draw_ribs(posterior, anterior, th, rng)
    blur = 0.0025
    return girdle.render(blur), posterior.render(blur), anterior.render(blur * 1.6)
