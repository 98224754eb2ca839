"""A stored report as the SR and the ORU: the identifiers fixed at inference, the report's own time."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import hl7
import pytest

from exporters.identity import is_valid_uid
from node.delivery.messages import MANUFACTURER, model_identity, report_oru, report_sr, sr_series_uid

DRAFTED = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def model():
    return model_identity(SimpleNamespace(name="echo-student", version="0123456789abcdef"))


def test_the_series_uid_is_a_valid_function_of_the_instance_uid() -> None:
    first = sr_series_uid("1.2.3.4")
    assert first == sr_series_uid("1.2.3.4") != sr_series_uid("1.2.3.5")
    assert first.startswith("2.25.") and is_valid_uid(first)


def test_the_model_is_named_with_our_manufacturer(model) -> None:
    assert (model.name, model.version, model.manufacturer) == (
        "echo-student",
        "0123456789abcdef",
        MANUFACTURER,
    )


def test_the_sr_carries_the_stored_uids_and_the_source_study(images, model) -> None:
    source = images.chest()
    sr = report_sr(source, "Heart normal.", "Normal.", model, "1.2.826.0.1.99")
    assert (sr.SOPInstanceUID, sr.SeriesInstanceUID) == ("1.2.826.0.1.99", sr_series_uid("1.2.826.0.1.99"))
    assert (sr.StudyInstanceUID, sr.AccessionNumber) == (source.StudyInstanceUID, source.AccessionNumber)
    assert sr.PreliminaryFlag == "PRELIMINARY" and sr.VerificationFlag == "UNVERIFIED"


def test_the_oru_uses_the_stored_control_id_the_site_names_and_the_report_time(
    images, model, node_settings
) -> None:
    settings = node_settings(hl7_sending_facility="XRAY", hl7_receiving_application="EPIC")
    message = hl7.parse(
        report_oru(images.chest(), "Heart normal.", "Normal.", model, "CTRL42", DRAFTED, settings).decode()
    )
    msh = message.segment("MSH")
    assert (str(msh[10]), str(msh[4]), str(msh[5]), str(msh[7])) == (
        "CTRL42",
        "XRAY",
        "EPIC",
        "20250102030405+0000",
    )
    assert str(message.segment("PID")[3][0][0]) == "MRN0042"


def test_a_source_without_patient_id_cannot_make_an_oru(images, model, settings) -> None:
    with pytest.raises(ValueError, match="study.patient_id is required: the RIS matches the report by it"):
        report_oru(
            images.chest(patient_id=""), "Heart normal.", "Normal.", model, "CTRL42", DRAFTED, settings
        )


def test_a_draft_by_the_bundled_demo_model_says_so_in_the_sr_and_the_oru(images, node_settings) -> None:
    from node.config.demo_model import demo_model_version
    from node.delivery.messages import DEMO_NOTICE

    version = demo_model_version()
    if version is None:
        pytest.fail("the bundled demo model is missing from this checkout")
    demo = model_identity(SimpleNamespace(name="echo-demo", version=version))
    site = model_identity(SimpleNamespace(name="site-model", version="fedcba9876543210"))
    settings = node_settings()

    def text_items(dataset) -> list[str]:
        found = []
        for item in dataset.get("ContentSequence", []):
            found += [item.TextValue] if "TextValue" in item else []
            found += text_items(item)
        return found

    def texts(model) -> tuple[str, str]:
        sr = report_sr(images.chest(), "Heart normal.", "Normal.", model, "1.2.826.0.1.99")
        oru = report_oru(images.chest(), "Heart normal.", "Normal.", model, "CTRL42", DRAFTED, settings)
        return "\n".join(text_items(sr)), oru.decode()

    demo_sr, demo_oru = texts(demo)
    assert DEMO_NOTICE in demo_sr and DEMO_NOTICE in demo_oru
    site_sr, site_oru = texts(site)
    assert "DEMO MODEL" not in site_sr and "DEMO MODEL" not in site_oru
