"""Lung markings: branching pulmonary vessels radiating from each hilum.

They matter for more than realism: a pneumothorax is recognised by the pleural line with NO
markings beyond it, so the normal lung must show markings out toward its periphery.
"""

from __future__ import annotations

import math

import numpy as np

from echo.data.anatomy import SIGN, Thorax
from echo.data.canvas import Canvas, Layer


def _branch(
    layer: Layer,
    rng: np.random.Generator,
    start: tuple[float, float],
    angle: float,
    length: float,
    width: float,
    value: float,
    depth: int,
    upper_gain: float,
) -> None:
    bend = float(rng.normal(0.0, 0.12))
    mid = (start[0] + math.cos(angle + bend) * length * 0.5, start[1] + math.sin(angle + bend) * length * 0.5)
    end = (mid[0] + math.cos(angle) * length * 0.5, mid[1] + math.sin(angle) * length * 0.5)
    gain = upper_gain if end[1] < start[1] else 1.0
    layer.line(np.array([start, mid, end]), width, min(value * gain, 1.0))
    if depth == 0:
        return
    spread = float(rng.uniform(0.25, 0.5))
    for direction in (-1, 1):
        _branch(
            layer,
            rng,
            end,
            angle + direction * spread + float(rng.normal(0.0, 0.08)),
            length * float(rng.uniform(0.62, 0.78)),
            width * 0.68,
            value * 0.86,
            depth - 1,
            upper_gain,
        )


def draw_vessels(canvas: Canvas, th: Thorax, rng: np.random.Generator, upper_gain: float = 1.0) -> Layer:
    """A layer of vessel trees; `upper_gain` > 1 makes upper-zone vessels prominent (cephalisation)."""
    layer = canvas.layer()
    for side, sign in SIGN.items():
        hilum = th.hila[side]
        reach = th.inner_half_width - abs(hilum[0])
        for k, base in enumerate(np.linspace(-1.75, 1.45, 9)):
            # angle measured from the lateral direction, positive downward; mirrored for the right lung
            angle = float(base + rng.normal(0.0, 0.1))
            direction = angle if sign > 0 else math.pi - angle
            start = (hilum[0] + sign * 0.01 * (k % 3), hilum[1] + float(rng.normal(0.0, 0.012)))
            _branch(
                layer,
                rng,
                start,
                direction,
                reach * float(rng.uniform(0.26, 0.34)),
                0.0075,
                0.95,
                3,
                upper_gain,
            )
        layer.ellipse(hilum, (0.022, 0.04), 0.85)
    return layer
