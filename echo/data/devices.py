"""Support devices on the frontal view: endotracheal tube, central venous catheter, pacemaker.

Devices are radiopaque: they are drawn into one metal layer whose values say how dense each part
is (a tube's barium stripe less than a pacemaker can). Positions follow the case's details: the
tube tip sits `tip_cm` above the carina, the line's route and tip, the generator's side and leads.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from echo.data.anatomy import Thorax
from echo.data.canvas import Layer, offset_path, smooth_path

CM = 1 / 43  # one centimetre in image heights for a 43 cm detector


def _rounded_box(center: tuple[float, float], radii: tuple[float, float], angle_deg: float) -> np.ndarray:
    """A superellipse: the rounded-rectangle outline of a generator can."""
    t = np.linspace(0.0, 2 * np.pi, 48, endpoint=False)
    x = radii[0] * np.sign(np.cos(t)) * np.abs(np.cos(t)) ** 0.5
    y = radii[1] * np.sign(np.sin(t)) * np.abs(np.sin(t)) ** 0.5
    a = np.radians(angle_deg)
    return np.stack(
        [center[0] + x * np.cos(a) - y * np.sin(a), center[1] + x * np.sin(a) + y * np.cos(a)], axis=1
    )


def draw_endotracheal_tube(layer: Layer, th: Thorax, details: Any, rng: np.random.Generator) -> None:
    tip_y = th.carina[1] - int(details["tip_cm"]) * CM
    x = th.carina[0]
    control = [
        (x + float(rng.uniform(0.02, 0.06)), -0.05),
        (x + float(rng.uniform(0.0, 0.015)), 0.06),
        (x + float(rng.normal(0.0, 0.003)), (0.06 + tip_y) / 2),
        (x, tip_y),
    ]
    path = smooth_path(control, samples=12)
    layer.line(path, 0.02, 0.14)  # the tube's plastic wall over its whole width
    for side in (-1, 1):
        layer.line(offset_path(path, side * 0.0095), 0.002, 0.3)
    layer.line(offset_path(path, 0.004), 0.005, 0.62)  # radiopaque stripe


def draw_central_line(layer: Layer, th: Thorax, details: Any, rng: np.random.Generator) -> None:
    cy = th.carina[1]
    tip_y = cy + (
        float(rng.uniform(-0.01, 0.025))
        if details["tip"] == "superior vena cava"
        else float(rng.uniform(0.055, 0.075))
    )
    svc_x = -0.038 + float(rng.normal(0.0, 0.003))
    side, route = details["side"], details["route"]
    sign = -1 if side == "right" else 1
    if route == "internal jugular":
        if side == "right":
            control = [(-0.075, -0.03), (-0.062, 0.1), (-0.045, 0.2), (svc_x, cy - 0.05), (svc_x, tip_y)]
        else:
            control = [
                (0.075, -0.03),
                (0.062, 0.12),
                (0.035, 0.215),
                (-0.015, cy - 0.09),
                (svc_x, cy - 0.03),
                (svc_x, tip_y),
            ]
    else:
        shoulder = th.shoulder_y
        control = [
            (sign * 0.3, shoulder + 0.075),
            (sign * 0.2, shoulder + 0.058),
            (sign * 0.1, shoulder + 0.08),
            (sign * 0.04 if side == "right" else 0.0, cy - 0.08),
            (svc_x, cy - 0.03),
            (svc_x, tip_y),
        ]
    layer.line(smooth_path(control, samples=12), 0.0048, 0.7)


def draw_pacemaker(layer: Layer, th: Thorax, details: Any, rng: np.random.Generator) -> None:
    sign = -1 if details["side"] == "right" else 1
    gx = sign * float(rng.uniform(0.17, 0.23))
    gy = th.shoulder_y + float(rng.uniform(0.07, 0.11))
    angle = float(rng.uniform(-15.0, 15.0))
    layer.polygon(_rounded_box((gx, gy), (0.042, 0.03), angle), 1.0)
    header = (gx - sign * 0.012, gy - 0.028)
    layer.ellipse(header, (0.02, 0.009), 0.55, angle)
    cy = th.carina[1]
    svc_x = -0.035
    heart_apex = (th.heart_left * 0.6, (th.dome_y["left"] + th.dome_y["right"]) / 2 - 0.04)
    start = [
        header,
        (sign * 0.1, th.shoulder_y + 0.06),
        (sign * 0.04, cy - 0.1),
        (svc_x, cy - 0.03),
        (svc_x - 0.004, cy + 0.07),
    ]
    ventricle = [*start, (-0.01, cy + 0.14), heart_apex]
    layer.line(smooth_path(ventricle, samples=12), 0.0045, 0.95)
    layer.ellipse(heart_apex, (0.007, 0.007), 1.0)
    if int(details["leads"]) == 2:
        tip = (svc_x + 0.02, cy + 0.065)
        atrium = [*start[:-1], (svc_x - 0.008, cy + 0.1), (svc_x + 0.012, cy + 0.115), tip]
        layer.line(smooth_path(atrium, samples=12), 0.0045, 0.95)
        layer.ellipse(tip, (0.007, 0.007), 1.0)
