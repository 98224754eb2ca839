"""The labeler reads back the labels the synthetic generator wrote its reports from (issue 3).

Uses the generator's own case sampler and report writer (echo/data), so a change of vocabulary
there shows up here.
"""

import numpy as np
import pytest

import echo.data.case as case_module
import echo.data.reports as reports_module
from echo.findings import FINDINGS
from echo.metrics.attributes import attributes_of
from echo.metrics.findings_f1 import f1_from_labels
from echo.metrics.labeler import analyse
from echo.report import format_report

STUDIES = 600


@pytest.fixture(scope="module")
def generated():
    rng = np.random.default_rng(2026)
    studies = []
    for _ in range(STUDIES):
        case = case_module.sample_case(rng)
        text = reports_module.write_report(case, rng)
        studies.append((case, analyse(format_report(text.findings, text.impression))))
    return studies


def test_positive_f1_per_class_is_at_least_098(generated):
    result = f1_from_labels([a.labels() for _, a in generated], [case.labels for case, _ in generated])
    for finding in FINDINGS:
        score = result.per_class[finding]
        assert score.support > 0, finding
        assert score.f1 >= 0.98, (finding, score)


def test_negatives_are_never_read_as_positive_or_uncertain(generated):
    for case, analysis in generated:
        labels = analysis.labels()
        for finding, truth in case.labels.items():
            if truth == "negative":
                assert labels.get(finding, "negative") == "negative", (finding, analysis.text)


def test_sides_and_lobes_match_the_manifest_attributes(generated):
    wrong = [
        (case.attributes, attributes_of(a)) for case, a in generated if attributes_of(a) != case.attributes
    ]
    assert len(wrong) <= STUDIES * 0.02, wrong[:3]
