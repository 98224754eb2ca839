"""echo.metrics.sentences: broken sentences in drafts, none in well-formed reports."""

from __future__ import annotations

import pytest

from echo.metrics.sentences import broken_sentence_figures, broken_sentences


@pytest.mark.parametrize(
    "report",
    [
        "FINDINGS: The heart is normal. Normal mediastinal contours.\nIMPRESSION: No acute disease.",
        "FINDINGS: Nodule of 1.2 cm. No change vs. prior, i.e. stable. Fig. 2 shows it.\nIMPRESSION: 1. Nodule. 2. Stable.",
        "FINDINGS: Right internal jugular catheter, tip at the cavoatrial junction!\nIMPRESSION: Line in place.",
    ],
)
def test_well_formed_reports_have_no_broken_sentence(report: str) -> None:
    assert broken_sentences(report) == []


def test_a_measurement_unit_before_a_lowercase_sentence_counts_as_broken() -> None:
    # "cm." ends a sentence in these reports: a lowercase word after it is a lost capital or word
    assert broken_sentences("FINDINGS: Measured 3 x 4 cm. lower lobe unchanged.\nIMPRESSION: -") == [
        "lower lobe unchanged."
    ]  # the lone "-" marks an empty section (echo.metrics.sections), not a sentence


@pytest.mark.parametrize(
    ("report", "broken"),
    [
        ("FINDINGS: The mediastinal contours. normal.\nIMPRESSION: Normal.", ["normal."]),
        (
            "FINDINGS: No pleural effusion or pneumothorax..\nIMPRESSION: Normal.",
            ["No pleural effusion or pneumothorax.."],
        ),
        (
            "FINDINGS: Heart enlarged.\nIMPRESSION: : internal jugular central.",
            [": internal jugular central."],
        ),
        (
            "FINDINGS: Left lower lobe,. Heart normal .\nIMPRESSION: Edema. . Effusion.",
            ["Left lower lobe,.", "Heart normal .", "."],
        ),
        ("FINDINGS: size. contours are normal.\nIMPRESSION: Normal.", ["size.", "contours are normal."]),
    ],
)
def test_broken_sentences_are_found_in_order(report: str, broken: list[str]) -> None:
    assert broken_sentences(report) == broken


def test_figures_count_reports_and_sentences() -> None:
    figures = broken_sentence_figures(
        [
            "FINDINGS: Normal.\nIMPRESSION: Normal.",
            "FINDINGS: size. contours.\nIMPRESSION: Normal..",
            "FINDINGS: a.\nIMPRESSION: b.",
        ]
    )
    assert figures.reports_with_broken == pytest.approx(2 / 3)
    assert figures.broken == 5
    assert broken_sentence_figures([]).reports_with_broken == 0.0
