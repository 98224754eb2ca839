"""From projected density to a for-presentation radiograph: tone curve, quantum noise, clipping.

The density map is the log-domain signal (what a detector reports after the log transform); a
film-like shoulder compresses dense regions, and noise grows where few photons arrive (dense
regions), so exposure and patient size change both brightness and graininess.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def low_frequency_field(rng: np.random.Generator, height: int, width: int, cells: int = 12) -> np.ndarray:
    """Smooth zero-mean noise (unit scale) for tissue texture and uneven exposure."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((width, height), Image.Resampling.BICUBIC))


def expose(density: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Display image (float32, bright = dense) in [0, 1]."""
    height, width = density.shape
    gain = float(rng.uniform(0.88, 1.12))
    shoulder = float(rng.uniform(1.35, 1.75))
    heel = 1.0 + 0.04 * low_frequency_field(rng, height, width, cells=4)  # uneven exposure across the field
    signal = np.maximum(density * gain * heel, 0.0)
    display = 1.0 - np.exp(-shoulder * signal)
    display /= 1.0 - np.exp(-shoulder * 1.9)  # dense bone over mediastinum lands near 1
    sigma = float(rng.uniform(0.006, 0.02))
    noise = rng.standard_normal((height, width), dtype=np.float32)
    display += sigma * (0.5 + display) * noise
    return np.clip(display, 0.0, 1.0).astype(np.float32)
