"""Save a contact sheet of 16 synthetic frontal radiographs, as the model sees them, with their labels.

The studies are picked to cover every finding (plus normals), generated as DICOM, read back through
`load_pixels` (so the sheet also exercises the DICOM decode path) and resized to the demo model's
~224 px input. Under each tile: the study's positive findings with side / lobe, or "normal".

    .venv/bin/python benchmarks/contact_sheet.py --out docs/contact_sheet.png [--seed 0] [--size 512]
    .venv/bin/python benchmarks/contact_sheet.py --site riverside --out docs/site-shift.png
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from echo.data.preprocess import PreprocessConfig, load_pixels, to_uint8
from echo.data.synthetic import generate_study, study_case
from echo.findings import FINDINGS

TILE = 224
CAPTION = 46
GRID = 4
MODEL_VIEW = PreprocessConfig(min_pixels=56 * 56, max_pixels=TILE * TILE)


# Two normal studies, each finding once, then second examples of the findings that vary most.
WANTED = (
    "normal",
    "normal",
    *FINDINGS,
    "pleural_effusion",
    "pneumothorax",
    "consolidation",
    "cardiomegaly",
    "edema",
)


def pick_indices(seed: int, count: int = GRID * GRID, site: str | None = None) -> list[int]:
    """For each wanted label, the first unused study that shows it with at most one other finding."""
    chosen: list[int] = []
    for target in WANTED[:count]:
        for index in range(5000):
            case = study_case(seed, index, site)
            shows = (
                case.is_normal
                if target == "normal"
                else target in case.positives and len(case.positives) <= 2
            )
            if shows and index not in chosen:
                chosen.append(index)
                break
    return chosen


def caption(row_labels: dict[str, str], attributes: dict[str, dict[str, str]]) -> str:
    parts = []
    for name in FINDINGS:
        if row_labels[name] == "positive":
            detail = next(iter(attributes.get(name, {}).values()), "")
            parts.append(f"{name.replace('_', ' ')}" + (f" ({detail})" if detail else ""))
    return ", ".join(parts) or "normal"


def _wrap(text: str, width: int = 34) -> list[str]:
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line][:3]


def build_sheet(seed: int, size: int, site: str | None = None) -> Image.Image:
    font = ImageFont.load_default(size=12)
    sheet = Image.new("L", (GRID * TILE, GRID * (TILE + CAPTION)), 0)
    draw = ImageDraw.Draw(sheet)
    with tempfile.TemporaryDirectory() as folder:
        for slot, index in enumerate(pick_indices(seed, site=site)):
            row = generate_study(seed, index, folder, size, site=site)
            pixels = load_pixels(row.image_path(folder))
            height, width = MODEL_VIEW.resized_size(*pixels.shape)
            image = Image.fromarray(to_uint8(pixels)).resize((width, height), Image.Resampling.BICUBIC)
            x0, y0 = (slot % GRID) * TILE, (slot // GRID) * (TILE + CAPTION)
            sheet.paste(image, (x0 + (TILE - width) // 2, y0 + (TILE - height) // 2))
            for number, line in enumerate(_wrap(f"{row.id}: {caption(row.labels, row.attributes)}")):
                draw.text((x0 + 4, y0 + TILE + 2 + 14 * number), line, fill=255, font=font)
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/contact_sheet.png"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--site", default=None, help="a site-shifted set (make-synthetic --site)")
    args = parser.parse_args()
    build_sheet(args.seed, args.size, args.site).save(args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
