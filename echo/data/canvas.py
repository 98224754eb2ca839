"""Drawing in body coordinates, rasterised with Pillow.

Body coordinates are in units of the image height: x runs from the patient's midline toward the
image's right (the patient's LEFT on a frontal view, which is displayed as if facing the patient),
y from the top of the image down. The canvas applies the patient's in-plane rotation and shift, so
anatomy is described once, upright, and drawn tilted. Shapes are filled into 8-bit Pillow layers
(fast C rasterisation and Gaussian blur) and come back as float32 masks in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Points = np.ndarray  # (N, 2) float: x, y in body coordinates


class Canvas:
    def __init__(self, height: int, width: int, rotation_deg: float = 0.0, shift: float = 0.0) -> None:
        if height < 16 or width < 16:
            raise ValueError(f"canvas must be at least 16x16 pixels, got {height}x{width}")
        self.height = height
        self.width = width
        self.shift = shift
        angle = math.radians(rotation_deg)
        self._cos = math.cos(angle)
        self._sin = math.sin(angle)

    @property
    def half_width(self) -> float:
        """Half the image width in body units (image heights)."""
        return self.width / self.height / 2

    def pixels(self, length: float) -> float:
        return length * self.height

    def to_pixels(self, points: Points | Sequence[Sequence[float]]) -> list[tuple[float, float]]:
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        x = p[:, 0] + self.shift
        y = p[:, 1] - 0.5
        xr = x * self._cos - y * self._sin
        yr = x * self._sin + y * self._cos
        cols = self.width / 2 + xr * self.height
        rows = self.height * (0.5 + yr)
        return list(zip(cols.tolist(), rows.tolist(), strict=True))

    @cached_property
    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Body coordinates (X, Y) of every pixel centre, each (height, width) float32."""
        cols = ((np.arange(self.width, dtype=np.float32) + 0.5) - self.width / 2) / self.height
        rows = (np.arange(self.height, dtype=np.float32) + 0.5) / self.height - 0.5
        xr, yr = np.meshgrid(cols, rows)
        x = xr * self._cos + yr * self._sin
        y = -xr * self._sin + yr * self._cos
        return (x - self.shift).astype(np.float32), (y + 0.5).astype(np.float32)

    def layer(self) -> Layer:
        return Layer(self)


class Layer:
    """One 8-bit drawing surface; later shapes overwrite earlier ones where they overlap."""

    def __init__(self, canvas: Canvas) -> None:
        self.canvas = canvas
        self.image = Image.new("L", (canvas.width, canvas.height), 0)
        self._draw = ImageDraw.Draw(self.image)

    @staticmethod
    def _level(value: float) -> int:
        return int(round(255 * min(max(value, 0.0), 1.0)))

    def polygon(self, points: Points, value: float = 1.0) -> None:
        self._draw.polygon(self.canvas.to_pixels(points), fill=self._level(value))

    def line(self, points: Points, width: float, value: float = 1.0, round_joints: bool = True) -> None:
        """A polyline `width` body units wide (at least one pixel); round joints cost time on thin lines."""
        pixels = max(1, int(round(self.canvas.pixels(width))))
        joint = "curve" if round_joints and pixels > 2 else None
        self._draw.line(self.canvas.to_pixels(points), fill=self._level(value), width=pixels, joint=joint)

    def ellipse(
        self,
        center: tuple[float, float],
        radii: tuple[float, float],
        value: float = 1.0,
        angle_deg: float = 0.0,
    ) -> None:
        self.polygon(ellipse_points(center, radii, angle_deg), value)

    def render(self, blur: float = 0.0) -> np.ndarray:
        """The layer as float32 in [0, 1], blurred by a Gaussian of `blur` body units."""
        image = self.image
        radius = self.canvas.pixels(blur)
        box = image.getbbox()
        if radius >= 0.3 and box is not None:
            # Blur only around what was drawn: most layers cover a small part of the image.
            margin = int(3 * radius) + 2
            box = (
                max(box[0] - margin, 0),
                max(box[1] - margin, 0),
                min(box[2] + margin, image.width),
                min(box[3] + margin, image.height),
            )
            image = image.copy()
            image.paste(image.crop(box).filter(ImageFilter.GaussianBlur(radius)), box[:2])
        return np.asarray(image, dtype=np.float32) * np.float32(1 / 255)


def ellipse_points(
    center: tuple[float, float], radii: tuple[float, float], angle_deg: float = 0.0, n: int = 48
) -> Points:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    x = radii[0] * np.cos(t)
    y = radii[1] * np.sin(t)
    a = math.radians(angle_deg)
    xr = x * math.cos(a) - y * math.sin(a)
    yr = x * math.sin(a) + y * math.cos(a)
    return np.stack([xr + center[0], yr + center[1]], axis=1)


def smooth_path(points: Points | Sequence[Sequence[float]], samples: int = 10) -> Points:
    """A Catmull-Rom spline through the control points (passes through every one of them)."""
    p = np.asarray(points, dtype=np.float64)
    if len(p) < 3:
        return p
    padded = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    t = np.linspace(0.0, 1.0, samples, endpoint=False)[:, None]
    t2, t3 = t * t, t * t * t
    out = []
    for i in range(1, len(padded) - 2):
        p0, p1, p2, p3 = padded[i - 1], padded[i], padded[i + 1], padded[i + 2]
        out.append(
            0.5
            * (
                2 * p1
                + (-p0 + p2) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                + (-p0 + 3 * p1 - 3 * p2 + p3) * t3
            )
        )
    out.append(p[-1:])
    return np.vstack(out)


def offset_path(path: Points, distance: float) -> Points:
    """The path shifted sideways by `distance` (positive: to the right of the direction of travel)."""
    tangent = np.gradient(path, axis=0)
    norm = np.linalg.norm(tangent, axis=1, keepdims=True)
    tangent = tangent / np.maximum(norm, 1e-9)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    return path + distance * normal


def mirror(points: Points, sign: int) -> Points:
    """Points given with x as a distance from the midline, placed on the side `sign` (-1 right, +1 left)."""
    p = np.array(points, dtype=np.float64)
    p[:, 0] *= sign
    return p
