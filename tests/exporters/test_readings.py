import pytest

from echo.findings import Label
from exporters.readings import FindingReading, check_readings, draft_readings


def test_reads_present_absent_uncertain_with_side_and_lobe() -> None:
    readings = draft_readings(
        "The heart is enlarged. Small left pleural effusion. No pneumothorax. Right lower lobe consolidation.",
        "Cardiomegaly. Possible edema.",
    )
    assert readings == (
        FindingReading("cardiomegaly", Label.POSITIVE),
        FindingReading("pleural_effusion", Label.POSITIVE, side="left"),
        FindingReading("pneumothorax", Label.NEGATIVE),
        FindingReading("consolidation", Label.POSITIVE, lobe="right lower lobe"),
        FindingReading("edema", Label.UNCERTAIN),
    )
    assert [r.present for r in readings] == [True, True, False, True, False]


def test_a_finding_the_draft_does_not_mention_is_left_out() -> None:
    readings = draft_readings("The lungs are clear.", "No acute cardiopulmonary process.")
    assert all(r.label is not Label.POSITIVE for r in readings)
    assert "pacemaker" not in {r.finding for r in readings}


def test_check_readings_passes_what_draft_readings_makes_and_a_label_given_as_its_value() -> None:
    readings = draft_readings(
        "Small left pleural effusion. Right lower lobe consolidation. Left nodule.", "Possible edema."
    )
    assert {r.finding for r in readings} >= {"pleural_effusion", "consolidation", "nodule", "edema"}

    check_readings(readings)
    check_readings(
        [FindingReading("edema", "uncertain"), FindingReading("nodule", Label.POSITIVE, side="right")]
    )
    check_readings(())


@pytest.mark.parametrize(
    ("readings", "error", "message"),
    [
        (b"", TypeError, "readings must be a sequence of FindingReading"),
        ({"edema": Label.POSITIVE}, TypeError, "readings must be a sequence of FindingReading"),
        ([FindingReading(["edema"], Label.POSITIVE)], ValueError, r"readings\[0\].finding \['edema'\] is not a class"),
        ([FindingReading("edema", None)], ValueError, r"readings\[0\].label None is not positive"),
        ([FindingReading("consolidation", Label.POSITIVE, side="left")], ValueError, r"readings\[0\].side 'left' is not one consolidation can have \(none\)"),
    ],
)  # fmt: skip
def test_check_readings_refuses_in_one_line_naming_the_reading(
    readings: object, error: type, message: str
) -> None:
    with pytest.raises(error, match=message) as raised:
        check_readings(readings)  # type: ignore[arg-type]
    assert "\n" not in str(raised.value)
