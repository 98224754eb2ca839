import pytest

from echo.findings import FINDINGS, Label
from echo.metrics.findings_f1 import ClassScore, f1_from_labels, positive_f1, positive_f1_from_labels

P, N, U = Label.POSITIVE, Label.NEGATIVE, Label.UNCERTAIN


def test_worked_example_micro_macro_and_per_class():
    predicted = [
        {"cardiomegaly": P, "pleural_effusion": P},  # tp cardiomegaly, fp effusion
        {"cardiomegaly": P},  # tp cardiomegaly
        {"pleural_effusion": U, "nodule": N},  # uncertain is not positive: fn effusion
        {},  # fn cardiomegaly
    ]
    expected = [
        {"cardiomegaly": "positive", "pleural_effusion": "negative"},
        {"cardiomegaly": "positive"},
        {"pleural_effusion": "positive"},
        {"cardiomegaly": "positive"},
    ]
    result = f1_from_labels(predicted, expected)
    # cardiomegaly: tp 2, fp 0, fn 1 -> P 1, R 2/3, F1 0.8; effusion: tp 0, fp 1, fn 1 -> 0
    assert result.per_class["cardiomegaly"] == pytest.approx(ClassScore(1.0, 2 / 3, 0.8, 3))
    assert result.per_class["pleural_effusion"] == ClassScore(0.0, 0.0, 0.0, 1)
    precision, recall, f1, support = result.per_class["nodule"]  # a plain 4-tuple too
    assert (precision, recall, f1, support) == (0.0, 0.0, 0.0, 0)
    assert set(result.per_class) == set(FINDINGS)
    # micro: tp 2, fp 1, fn 2 -> P 2/3, R 1/2, F1 4/7; macro over classes with support: (0.8 + 0) / 2
    assert result.micro == pytest.approx(4 / 7)
    assert result.macro == pytest.approx(0.4)


def test_reports_are_labelled_on_both_sides():
    preds = [
        "Small left pleural effusion. No pneumothorax.",
        "Heart size is normal.",
        "Possible pneumothorax.",
    ]
    refs = ["Left pleural effusion.", "Cardiomegaly.", "Right pneumothorax."]
    result = positive_f1(preds, refs)
    assert result.per_class["pleural_effusion"].f1 == 1.0
    assert result.per_class["cardiomegaly"] == ClassScore(0.0, 0.0, 0.0, 1)
    assert result.per_class["pneumothorax"] == ClassScore(0.0, 0.0, 0.0, 1)
    assert result.micro == pytest.approx(0.5)  # tp 1, fp 0, fn 2: P 1, R 1/3
    same = positive_f1_from_labels(
        preds, [{"pleural_effusion": "positive"}, {"cardiomegaly": P}, {"pneumothorax": P}]
    )
    assert same == result


def test_perfect_and_empty():
    perfect = positive_f1(["Right pneumothorax. Cardiomegaly."], ["Cardiomegaly and right pneumothorax."])
    assert (perfect.micro, perfect.macro) == (1.0, 1.0)
    nothing = positive_f1(["Normal."], ["Normal."])
    assert (nothing.micro, nothing.macro) == (0.0, 0.0)


def test_bad_inputs_are_value_errors():
    with pytest.raises(ValueError, match="1 predictions but 2 references"):
        f1_from_labels([{}], [{}, {}])
    with pytest.raises(ValueError, match="unknown finding class 'fracture'"):
        f1_from_labels([{}], [{"fracture": "positive"}])
