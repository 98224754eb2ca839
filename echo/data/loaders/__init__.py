"""Site data loaders: a DICOM folder with a CSV/JSONL of reports, the MIMIC-CXR layout, ECHO JSON.

All return `LoadResult(examples, report)`: `Example(id, image_paths, frontal_path, findings,
impression, report)` objects and a `LoadReport` of rows loaded and skipped (with the first
reasons). One bad row or file never stops a load; a source that cannot be read at all is a
`UserError` (one line).
"""

from __future__ import annotations

from pathlib import Path

from echo.data.loaders.echo_json import load_echo_json
from echo.data.loaders.example import Example, LoadReport, LoadResult
from echo.data.loaders.folder import load_folder
from echo.data.loaders.mimic import load_mimic_cxr
from echo.errors import UserError

__all__ = [
    "Example",
    "LoadReport",
    "LoadResult",
    "load_echo_json",
    "load_examples",
    "load_folder",
    "load_mimic_cxr",
]


def load_examples(source: str | Path, verify_images: bool = False, show_progress: bool = False) -> LoadResult:
    """Pick the loader from the source: a .json file, a .jsonl/.csv reports file, a MIMIC root, a folder."""
    path = Path(source)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".json":
            return load_echo_json(path, verify_images)
        if suffix in (".jsonl", ".csv"):
            return load_folder(path.parent, path, verify_images, show_progress)
        raise UserError(f"{path}: unknown data file type (expected .json, .jsonl or .csv)")
    if path.is_dir():
        if path.name == "files" or (path / "files").is_dir():
            return load_mimic_cxr(path, verify_images, show_progress)
        return load_folder(path, None, verify_images, show_progress)
    raise UserError(f"{path}: no such file or folder")
