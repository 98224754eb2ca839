"""Frontal chest geometry: where the walls, lungs, diaphragm, heart and hila of one patient lie.

All lengths are in image heights. A side is named from the patient ("right" is the image's left,
x < 0); `SIGN` turns a side into the sign of x. Shapes are returned as point lists in body
coordinates (see `canvas`), ready to be filled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from echo.data.canvas import Points, ellipse_points, mirror
from echo.data.case import Body

SIGN: dict[str, int] = {"right": -1, "left": 1}


@dataclass(frozen=True)
class Thorax:
    body_half_width: float
    wall: float  # soft tissue between skin and the inner rib margin
    inner_half_width: float  # inner rib margin at the widest level, each side of the midline
    apex_y: float
    dome_y: dict[str, float]  # top of each hemidiaphragm
    angle_y: dict[str, float]  # lateral costophrenic angles
    mediastinum: float  # half width of the upper mediastinum
    heart_right: float  # x of the right heart border (negative)
    heart_left: float  # x of the left heart border
    heart_top: float
    carina: tuple[float, float]
    hila: dict[str, tuple[float, float]]
    shoulder_y: float

    @property
    def heart_width(self) -> float:
        return self.heart_left - self.heart_right

    @property
    def ctr(self) -> float:
        """Cardiothoracic ratio: widest heart over widest inner thorax."""
        return self.heart_width / (2 * self.inner_half_width)

    def lateral_wall(self, y: np.ndarray | float, side: str) -> np.ndarray | float:
        """Distance of the inner chest wall from the midline at height y (the lung's lateral edge)."""
        med = self.mediastinum
        top = med + (self.inner_half_width - med) * 0.5
        cap_bottom = self.apex_y + 0.06
        t = np.clip((np.asarray(y) - cap_bottom) / (self.angle_y[side] - cap_bottom), 0.0, 1.0)
        return top + (self.inner_half_width - top) * np.sin(t * np.pi / 2) ** 0.55


def build_thorax(body: Body, ctr: float, rng: np.random.Generator, aspect: float) -> Thorax:
    half_image = aspect / 2
    body_half_width = min(0.36 * body.size + 0.03 * body.fat, half_image - 0.015)
    wall = 0.028 + 0.03 * body.fat
    inner = body_half_width - wall
    apex_y = float(rng.uniform(0.11, 0.15))
    dome_right = 0.64 + 0.09 * body.inspiration + float(rng.uniform(-0.015, 0.015))
    dome_left = dome_right + float(rng.uniform(0.01, 0.035))
    depth = float(rng.uniform(0.06, 0.085))
    mediastinum = float(rng.uniform(0.048, 0.06))
    heart_width = ctr * 2 * inner
    right_share = float(rng.uniform(0.30, 0.37))
    heart_right = -heart_width * right_share
    carina_y = apex_y + float(rng.uniform(0.2, 0.23))
    return Thorax(
        body_half_width=body_half_width,
        wall=wall,
        inner_half_width=inner,
        apex_y=apex_y,
        dome_y={"right": dome_right, "left": dome_left},
        angle_y={"right": dome_right + depth, "left": dome_left + depth},
        mediastinum=mediastinum,
        heart_right=heart_right,
        heart_left=heart_right + heart_width,
        heart_top=carina_y + float(rng.uniform(0.06, 0.09)),
        carina=(float(rng.uniform(-0.004, 0.006)), carina_y),
        hila={"right": (-0.085, carina_y + 0.045), "left": (0.085, carina_y + 0.025)},
        shoulder_y=float(rng.uniform(0.1, 0.14)),
    )


def lung_outline(th: Thorax, side: str) -> Points:
    """The lung's outline: apical cap, lateral wall, sharp costophrenic angle, dome, medial border."""
    med = th.mediastinum
    lat = th.inner_half_width
    dome = th.dome_y[side]
    angle = th.angle_y[side]
    top = float(th.lateral_wall(0.0, side))
    cap_bottom = th.apex_y + 0.06
    # Apical cap, from the medial edge over the top to the lateral edge.
    a = np.linspace(np.pi, 0.0, 14)
    cap = np.stack([(med + top) / 2 + (top - med) / 2 * np.cos(a), cap_bottom - 0.06 * np.sin(a)], axis=1)
    # Lateral wall down to the costophrenic angle.
    wall_y = np.linspace(cap_bottom, angle, 18)[1:]
    wall = np.stack([th.lateral_wall(wall_y, side), wall_y], axis=1)
    # Diaphragm: steep lateral limb from the angle to the dome, then gently down to the heart.
    peak = med + 0.45 * (lat - med)
    lateral_x = np.linspace(lat, peak, 14)[1:]
    lateral_limb = np.stack(
        [lateral_x, dome + (angle - dome) * ((lateral_x - peak) / (lat - peak)) ** 2], axis=1
    )
    medial_x = np.linspace(peak, med + 0.01, 8)[1:]
    medial_limb = np.stack([medial_x, dome + 0.025 * ((peak - medial_x) / (peak - med)) ** 2], axis=1)
    # Medial border up to the apex, with the aortic knob and pulmonary trunk bulging on the left.
    border_y = np.linspace(dome + 0.02, cap_bottom, 16)[1:-1]
    border_x = med + 0.01 * (border_y - cap_bottom) / (dome - cap_bottom)
    if side == "left":
        border_x = border_x + 0.028 * np.exp(-(((border_y - (th.carina[1] - 0.06)) / 0.03) ** 2))
        border_x = border_x + 0.014 * np.exp(-(((border_y - (th.carina[1] + 0.03)) / 0.025) ** 2))
    border = np.stack([border_x, border_y], axis=1)
    outline = np.vstack([cap, wall, lateral_limb, medial_limb, border])
    return mirror(outline, SIGN[side])


def heart_outline(th: Thorax) -> Points:
    """The cardiac silhouette: an ellipse resting on the diaphragm, wider toward the patient's left."""
    dome = (th.dome_y["right"] + th.dome_y["left"]) / 2
    ry = (dome - th.heart_top) * 0.72
    center = ((th.heart_left + th.heart_right) / 2, dome - 0.45 * ry)
    points = ellipse_points(center, (th.heart_width / 2, ry), angle_deg=-12.0, n=64)
    # Rescale x so the widest extent equals the intended heart width after the tilt.
    extent = points[:, 0].max() - points[:, 0].min()
    points[:, 0] = center[0] + (points[:, 0] - center[0]) * th.heart_width / extent
    return points


def body_outline(th: Thorax) -> Points:
    """Neck, shoulders and the lateral skin line down to the bottom of the image."""
    bw = th.body_half_width
    neck = 0.075
    half = np.array(
        [
            (neck, -0.05),
            (neck, 0.03),
            (neck + 0.06, th.shoulder_y - 0.05),
            (bw * 0.9, th.shoulder_y - 0.02),
            (bw * 1.02, th.shoulder_y + 0.05),
            (bw, 0.45),
            (bw * 0.97, 1.05),
        ]
    )
    right = mirror(half, -1)
    left = mirror(half[::-1], 1)
    return np.vstack([right, left])
