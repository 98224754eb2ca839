from echo.findings import Label
from exporters.readings import FindingReading, draft_readings


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
