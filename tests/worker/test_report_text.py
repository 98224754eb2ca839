"""Generated text made printable before it is stored and sent."""

from __future__ import annotations

import pytest

from worker.report_text import EmptyReport, clean_report, printable


def test_control_characters_and_broken_utf8_are_removed() -> None:
    assert printable("Lungs\x1c are\x0b clear.\ufffd") == "Lungs are clear."


def test_blanks_are_tidied_and_line_breaks_kept() -> None:
    assert printable("  Heart\t\tnormal. \r\n\n  No effusion.  \r") == "Heart normal.\nNo effusion."


def test_letters_beyond_ascii_survive() -> None:
    assert printable("Kein Erguss, Herzgröße normal — ½") == "Kein Erguss, Herzgröße normal — ½"


def test_a_report_keeps_a_section_when_the_other_is_empty() -> None:
    report = clean_report("Lungs clear.", "\x1d")
    assert (report.findings, report.impression) == ("Lungs clear.", "")
    assert report.text == "FINDINGS: Lungs clear.\nIMPRESSION: "


def test_nothing_printable_is_an_empty_report() -> None:
    with pytest.raises(
        EmptyReport, match=r"the model produced an empty report \(no printable findings or impression\)"
    ):
        clean_report("\ufffd\x1c", "  \t")
