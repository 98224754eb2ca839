"""exporters.highdicom_tables: the SRs read highdicom's module table through a slim copy, and the
SRs are the same as those highdicom builds with its whole table."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import highdicom.base as hd_base
import pytest
from highdicom import _standard_utils as hd_tables
from pydicom import Dataset

from exporters import highdicom_tables
from exporters.air_sr import build_air_sr
from exporters.identity import ModelIdentity
from exporters.readings import draft_readings
from exporters.sr import build_sr

WHOLE = highdicom_tables._ORIGINAL  # highdicom's own cached loader of the whole table
ROOT = Path(__file__).resolve().parents[2]
FINDINGS, IMPRESSION = "The heart is enlarged. Small left pleural effusion.", "Cardiomegaly."
CLOCK = ("ContentDate", "ContentTime", "InstanceCreationDate", "InstanceCreationTime")
UIDS = {
    "series_instance_uid": "1.2.826.0.1.3680043.8.498.1",
    "sop_instance_uid": "1.2.826.0.1.3680043.8.498.2",
}


def _without_clock(dataset: Dataset) -> Dataset:
    copy = Dataset(dataset)
    for keyword in CLOCK:
        if keyword in copy:
            delattr(copy, keyword)
    for item in copy.get("ContributingEquipmentSequence", []):
        del item.ContributionDateTime
    return copy


def _both(image: Dataset, model: ModelIdentity) -> list[Dataset]:
    return [
        _without_clock(build_sr([image], FINDINGS, IMPRESSION, model, **UIDS)),
        _without_clock(build_air_sr([image], draft_readings(FINDINGS, IMPRESSION), model, **UIDS)),
    ]


def test_the_srs_equal_those_built_with_highdicoms_whole_table(
    image: Dataset, model: ModelIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    slim = _both(image, model)
    assert hd_base.get_module_attribute_map is hd_tables.get_module_attribute_map is not WHOLE
    monkeypatch.setattr(highdicom_tables, "slim_module_table", lambda: None)
    for module in (hd_base, hd_tables):
        monkeypatch.setattr(module, "get_module_attribute_map", WHOLE)
    whole = _both(image, model)
    assert slim == whole
    assert slim[0].PatientID == image.PatientID and slim[1].AccessionNumber == image.AccessionNumber


def test_a_module_outside_the_slim_copy_reads_from_the_whole_table() -> None:
    table = highdicom_tables._slim_table()
    outside = next(key for key in WHOLE() if key not in table.kept)
    assert table[outside] == WHOLE()[outside]
    assert outside in table and "no-such-module" not in table
    assert len(table) == len(WHOLE()) > 10 * len(table.kept)
    with pytest.raises(KeyError):
        table["no-such-module"]


def test_building_srs_leaves_the_whole_table_unloaded_and_the_memory_small() -> None:
    """In a fresh process (the table is cached process-wide): after both SRs, highdicom holds no
    whole table, and the process grew by far less than the table's ~67 MB."""
    script = textwrap.dedent(
        """
        import json
        from exporters import highdicom_tables
        from exporters.air_sr import build_air_sr
        from exporters.readings import draft_readings
        from exporters.sr import build_sr
        from tests.exporters.conftest import build_image
        from exporters.identity import ModelIdentity

        def rss_kb():
            return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS"))

        image = build_image()
        model = ModelIdentity(name="echo-student", version="1.2.0", manufacturer="ECHO Project")
        before = rss_kb()
        for _ in range(3):
            build_sr([image], "Small left pleural effusion.", "Effusion.", model)
            build_air_sr([image], draft_readings("Small left pleural effusion.", "Effusion."), model)
        print(json.dumps({"cached": highdicom_tables._ORIGINAL.cache_info().currsize,
                          "grew_mb": (rss_kb() - before) / 1024}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    figures = __import__("json").loads(done.stdout.strip().splitlines()[-1])
    assert figures["cached"] == 0
    assert figures["grew_mb"] < 35, figures  # the whole table kept: ~67 MB more
