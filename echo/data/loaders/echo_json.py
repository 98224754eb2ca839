"""The ECHO evaluation JSON format: a JSON list of {"image" | "images", "report" | "findings"/"impression"}.

Optional per item: "id" (default "item<N>") and "frontal" (default: the first image). Image paths
are relative to the JSON file's folder (or absolute). A file that is not a JSON list is a
one-line error; a bad item is counted and skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from echo.data.loaders.example import Example, LoadReport, LoadResult
from echo.data.loaders.images import check_image
from echo.data.loaders.sections import report_from_fields
from echo.data.preprocess import ImageReadError
from echo.errors import UserError


def _paths(item: dict[str, Any], folder: Path) -> list[Path]:
    if "images" in item:
        images = item["images"]
        if not isinstance(images, list) or not images or not all(isinstance(p, str) and p for p in images):
            raise ValueError("images must be a non-empty list of paths")
    elif "image" in item:
        if not isinstance(item["image"], str) or not item["image"]:
            raise ValueError("image must be a path")
        images = [item["image"]]
    else:
        raise ValueError("no image or images")
    return [Path(p) if Path(p).is_absolute() else folder / p for p in images]


def load_echo_json(path: str | Path, verify_images: bool = False) -> LoadResult:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read ({error})") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of items, got {type(data).__name__}")
    report = LoadReport(source=str(path))
    examples: list[Example] = []
    seen: set[str] = set()
    for number, item in enumerate(data):
        where = f"item {number}"
        report.total += 1
        try:
            if not isinstance(item, dict):
                raise ValueError("not a JSON object")
            example_id = str(item.get("id") or f"item{number}")
            if example_id in seen:
                raise ValueError(f"duplicate id {example_id}")
            text = report_from_fields(item.get("findings"), item.get("impression"), item.get("report"))
            paths = _paths(item, path.parent)
            for image in paths:
                check_image(image, verify_images)
            frontal = paths[0]
            if item.get("frontal"):
                frontal = (
                    Path(item["frontal"])
                    if Path(item["frontal"]).is_absolute()
                    else path.parent / item["frontal"]
                )
                if frontal not in paths:
                    raise ValueError(f"frontal {item['frontal']} is not one of the item's images")
        except (ValueError, ImageReadError) as error:
            report.skip(where, str(error))
            continue
        seen.add(example_id)
        examples.append(Example.make(example_id, tuple(paths), frontal, text.findings, text.impression))
        report.loaded += 1
    return LoadResult(examples, report)
