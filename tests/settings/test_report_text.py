from echo.report import Report, format_report, split_report


def test_round_trip():
    text = format_report(" Lungs are clear. ", "No acute disease.")
    assert text == "FINDINGS: Lungs are clear.\nIMPRESSION: No acute disease."
    assert split_report(text) == Report("Lungs are clear.", "No acute disease.")


def test_generated_text_without_headers_or_with_repeats():
    assert split_report("Heart is enlarged.") == Report("Heart is enlarged.", "")
    assert split_report("Heart. IMPRESSION: a IMPRESSION: b") == Report("Heart.", "a")
    assert split_report("IMPRESSION: only") == Report("", "only")
