"""The metrics table `echo-train evaluate` prints: a summary and the per-class finding scores."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def summary_table(results: Mapping[str, Any]) -> Table:
    table = Table(title="ECHO report metrics", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    f1 = results["positive_f1"]
    repeats = results["repetition"]
    normals = results["normal_studies"]
    duplicates = results["duplicate_words"]
    fluency = results["fluency"]
    gate = results.get("gate")
    rows = [
        ("studies evaluated", f"{results['evaluated']} of {results['studies']}"),
        ("positive-finding F1, micro", _number(f1["micro"])),
        ("positive-finding precision, micro", _number(f1["micro_precision"])),
        ("positive-finding recall, micro", _number(f1["micro_recall"])),
        ("positive-finding F1, macro", _number(f1["macro"])),
        (
            f"false-positive findings per normal study ({normals['studies']})",
            _number(normals["false_positives_per_study"] if normals["studies"] else None),
        ),
        (
            "normal studies drafted as normal",
            _number(normals["called_normal"] if normals["studies"] else None),
        ),
        ("ROUGE-L (F1)", _number(results["rouge_l"])),
        ("BLEU-4", _number(results["bleu_4"])),
        ("CIDEr-D", _number(results["cider_d"])),
        ("SemScore-MiniLM", _number(results["semscore_minilm"])),
        ("repeated 4-grams (share)", _number(repeats["repeated_4gram_share"])),
        ("reports with a 4-gram 3+ times", _number(repeats["reports_with_4gram_3x"])),
        ("adjacent duplicate words (share of words)", _number(duplicates["rate"])),
        ("reports with an adjacent duplicate word", _number(duplicates["reports_with_duplicates"])),
        ("reports with a broken sentence", _number(results["broken_sentences"]["reports_with_broken"])),
        ("reports with both sections", _number(results["both_sections"])),
        (
            "fluency: AR NLL per token (nats)",
            _number(None if fluency is None else fluency["ar_nll_per_token"]),
        ),
        ("tokens per forward", _number(results["tokens_per_forward"], 2)),
        ("tokens per second", _number(results["tokens_per_second"], 1)),
    ]
    if gate is not None:
        counts = f"{gate['passed']} / {gate['redecoded']} / {gate['held']}"
        rows.insert(1, ("draft gate: passed / re-decoded / held", counts))
    for name, value in rows:
        table.add_row(name, value)
    return table


def class_table(results: Mapping[str, Any]) -> Table:
    source = results["reference_labels"]
    table = Table(title=f"positive findings per class (reference labels: {source})", title_justify="left")
    for name, justify in (
        ("finding", "left"),
        ("precision", "right"),
        ("recall", "right"),
        ("F1", "right"),
        ("support", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for finding, score in results["positive_f1"]["per_class"].items():
        has_support, has_predictions = score["support"] > 0, score["predicted"] > 0
        table.add_row(
            finding.replace("_", " "),
            _number(score["precision"] if has_predictions else None),
            _number(score["recall"] if has_support else None),
            _number(score["f1"] if has_support or has_predictions else None),
            str(score["support"]),
        )
    return table


def render(results: Mapping[str, Any]) -> Group:
    parts: list[Any] = [summary_table(results), class_table(results)]
    if results["missing_predictions"]:
        shown = ", ".join(results["missing_ids"])
        more = "" if results["missing_predictions"] <= len(results["missing_ids"]) else ", ..."
        parts.append(
            Text(
                f"{results['missing_predictions']} manifest studies have no prediction ({shown}{more}); "
                "they are left out of every metric.",
                style="yellow",
            )
        )
    if results.get("gate") and results["gate"]["held"]:
        parts.append(
            Text(
                f"{results['gate']['held']} drafts held by the draft gate (never sent) are left out of the "
                "quality metrics; tokens per forward and per second count every forward spent, theirs included."
            )
        )
    if results["evaluated"] and results["timed_reports"] < results["evaluated"]:
        parts.append(
            Text(
                f"speed from {results['timed_reports']} of {results['evaluated']} predictions (the rest have no timing)"
            )
        )
    return Group(*parts)
