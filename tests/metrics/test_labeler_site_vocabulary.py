"""Abbreviations of site house styles (issue 17): added to the labeler without changing the rest."""

import pytest

from echo.findings import Label
from echo.metrics.labeler import label_report

P, N = Label.POSITIVE, Label.NEGATIVE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Left PPM with RA/RV leads.", {"pacemaker": P}),
        ("L PPM, RV lead.", {"pacemaker": P}),
        ("PPM in place.", {"pacemaker": P}),
        ("No PPM.", {"pacemaker": N}),
        ("Interval removal of the PPM.", {"pacemaker": N}),
        ("Small left PTX. R IJ CVC, tip SVC.", {"pneumothorax": P, "central_line": P}),
        ("ETT 4 cm above the carina. Small b/l effusions.", {"endotracheal_tube": P, "pleural_effusion": P}),
        ("LINES/TUBES: No lines/tubes. LUNGS: Lungs clear b/l.", {
            "endotracheal_tube": N, "central_line": N, "pacemaker": N,
            "consolidation": N, "nodule": N, "edema": N,
        }),
        ("Heart size WNL. Mediastinum WNL.", {}),
        ("ppmv", {}),  # a word edge: not an abbreviation inside another word
    ],
)  # fmt: skip
def test_site_abbreviations(text, expected):
    assert label_report(text) == expected
