"""The metrics that see the one-step student's failure: precision and recall next to F1, false
positives on normal studies, adjacent duplicated words, both sections present. Tiny literals."""

import pytest

from echo.findings import Label
from echo.metrics.duplicates import adjacent_duplicates, duplicate_words, word_count
from echo.metrics.findings_f1 import f1_from_labels, normal_studies
from echo.metrics.sections import complete_share, missing_sections

P, N = Label.POSITIVE, Label.NEGATIVE

# ---- precision and recall -----------------------------------------------------------------------


def test_micro_precision_and_recall_of_a_worked_example():
    # study 1: edema found, plus a false nodule; study 2: effusion missed; study 3: nothing, fine
    predicted = [{"edema": P, "nodule": P}, {}, {}]
    expected = [{"edema": P}, {"pleural_effusion": P}, {}]
    result = f1_from_labels(predicted, expected)
    assert result.micro_precision == pytest.approx(1 / 2)  # tp 1, fp 1
    assert result.micro_recall == pytest.approx(1 / 2)  # tp 1, fn 1
    assert result.micro == pytest.approx(1 / 2)


def test_precision_falls_with_false_positives_while_recall_holds():
    expected = [{"edema": P}, {}]
    careful = f1_from_labels([{"edema": P}, {}], expected)
    noisy = f1_from_labels([{"edema": P, "pneumothorax": P}, {"cardiomegaly": P}], expected)
    assert (careful.micro_precision, careful.micro_recall) == (1.0, 1.0)
    assert noisy.micro_precision == pytest.approx(1 / 3) and noisy.micro_recall == 1.0


def test_no_predictions_give_zero_precision_not_an_error():
    result = f1_from_labels([{}], [{"edema": P}])
    assert (result.micro_precision, result.micro_recall, result.micro) == (0.0, 0.0, 0.0)


# ---- false positives on normal studies ----------------------------------------------------------


def test_false_positives_per_normal_study():
    predicted = [{"nodule": P, "edema": P}, {}, {"edema": N}, {"edema": P}]
    expected = [{"edema": N}, {}, {}, {"edema": P}]  # the last study is not normal
    normals = normal_studies(predicted, expected)
    assert normals.studies == 3
    assert normals.false_positives_per_study == pytest.approx(2 / 3)
    assert normals.called_normal == pytest.approx(2 / 3)


def test_no_normal_studies():
    normals = normal_studies([{"edema": P}], [{"edema": P}])
    assert (normals.studies, normals.false_positives_per_study, normals.called_normal) == (0, 0.0, 0.0)
    with pytest.raises(ValueError, match="1 predictions but 2 references"):
        normal_studies([{}], [{}, {}])


# ---- adjacent duplicate words -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("The the heart is normal.", ["the"]),
        ("consolidation nodule nodule effusion", ["nodule"]),
        ("No effusion, Effusion is absent.", ["effusion"]),  # across a comma, any case
        ("The heart is normal. Normal mediastinal contours.", []),  # a sentence end separates
        ("Lungs clear:\nclear", []),
        ("the the the", ["the", "the"]),
        ("A nodule measuring 1.1 cm.", []),  # a decimal is one word
        ("Lungs are clear. Heart is normal.", []),
        ("", []),
    ],
)
def test_duplicate_words(text, found):
    assert duplicate_words(text) == found


def test_duplicate_word_rate_is_over_all_words():
    result = adjacent_duplicates(["the the heart", "lungs are clear", "no no no"])
    assert (result.duplicates, result.words) == (3, 9)
    assert result.rate == pytest.approx(3 / 9)
    assert result.reports_with_duplicates == pytest.approx(2 / 3)
    assert word_count("FINDINGS: 2.5 cm") == 3
    assert adjacent_duplicates([]).rate == 0.0


# ---- both sections ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        ("FINDINGS: Lungs are clear.\nIMPRESSION: Normal.", []),
        ("FINDINGS: Lungs are clear.\nIMPRESSION: -", ["IMPRESSION"]),  # the demo's broken draft
        ("FINDINGS: Lungs are clear.", ["IMPRESSION"]),
        ("Lungs are clear. IMPRESSION: Normal.", ["FINDINGS"]),  # text without its header
        ("FINDINGS:\nIMPRESSION: ..", ["FINDINGS", "IMPRESSION"]),
        ("findings: lungs clear. impression: normal.", ["FINDINGS", "IMPRESSION"]),  # headers are upper case
    ],
)
def test_missing_sections(text, missing):
    assert missing_sections(text) == missing


def test_complete_share():
    assert complete_share(["FINDINGS: a.\nIMPRESSION: b.", "FINDINGS: a.\nIMPRESSION: -"]) == 0.5
    assert complete_share([]) == 0.0
