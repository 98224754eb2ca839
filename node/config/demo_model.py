"""The bundled demo model: trained on synthetic phantoms by this repository's own pipeline, for
trying a node, never for patients. Whatever serves or shows a draft says so when it is this model.

It is recognised by its content version (the manifest's hash of its files), so a copy of the
bundled directory elsewhere is still the demo model, and so is a report it wrote (the report's
model version is the same hash).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from node.config.settings import bundled_model_dir

DEMO_MODEL_WARNING = (
    "the bundled DEMO model, trained on synthetic images only: its drafts are not for clinical use "
    "(set ECHO_MODEL_DIR to the site's exported model)"
)


def _manifest_version(model_dir: Path) -> str | None:
    try:
        version = json.loads((model_dir / "manifest.json").read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError, AttributeError):
        return None
    return version if isinstance(version, str) and version else None


@cache
def demo_model_version() -> str | None:
    """The bundled model's version, or None when this install has no bundled model."""
    return _manifest_version(bundled_model_dir())


def is_demo_model_version(version: str | None) -> bool:
    return version is not None and version == demo_model_version()


def is_demo_model_dir(model_dir: Path) -> bool:
    try:
        if model_dir.resolve() == bundled_model_dir().resolve():
            return True
    except OSError:
        return False
    return is_demo_model_version(_manifest_version(model_dir))
