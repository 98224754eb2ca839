"""highdicom's table of the standard's modules, kept to what building an SR reads.

To build an SR, highdicom asks which attributes the SR's IOD and the source image's IOD hold
(`is_attribute_in_iod`: Content Date, pixel data) and copies the patient and study attributes from
the source image (`copy_patient_and_study_information`). For both it reads its table of every
attribute of every module of the standard (`highdicom._standard_utils.get_module_attribute_map`: a
22 MB JSON file, about 67 MB of Python objects) and keeps it cached for the life of the process. The
node builds SRs in its long-running worker, where that one table was about a fifth of the process.

`slim_module_table()` gives highdicom a table that reads the file once, keeps the modules those
questions read (every module of the SR IODs the node writes and of the chest radiograph IODs, CR and
DX, plus the Patient and Study modules of every IOD: 6,559 of 99,740 attributes in highdicom 0.28)
and lets the rest go. A module outside those still answers (a source image of another IOD): the first
such lookup loads the whole table again, highdicom's own way, so nothing reads differently; the
process is then only not smaller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from typing import Any

import highdicom.base as hd_base
from highdicom import _standard_utils as hd_tables
from pydicom.uid import (
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
)

KEPT_ENTITIES = frozenset({"Patient", "Study"})  # the information entities SR building copies
# Every module of these IODs: the SRs the node writes and the images it drafts from.
KEPT_SOP_CLASSES = (
    ComprehensiveSRStorage,
    Comprehensive3DSRStorage,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
)

_ORIGINAL: Callable[[], dict[str, list[dict[str, Any]]]] = hd_tables.get_module_attribute_map
_lock = threading.Lock()


class SlimModuleTable(Mapping[str, list[dict[str, Any]]]):
    """Module key -> its attributes, as highdicom's table, holding only the kept modules; any
    other key (or a walk over every module) loads highdicom's whole table and reads it there."""

    def __init__(self, kept: dict[str, list[dict[str, Any]]]) -> None:
        self.kept = kept

    def __getitem__(self, key: str) -> list[dict[str, Any]]:
        found = self.kept.get(key)
        return found if found is not None else _ORIGINAL()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.kept or key in _ORIGINAL()

    def __iter__(self) -> Iterator[str]:
        return iter(_ORIGINAL())

    def __len__(self) -> int:
        return len(_ORIGINAL())


@cache
def _slim_table() -> SlimModuleTable:
    whole = _ORIGINAL()
    _ORIGINAL.cache_clear()  # type: ignore[attr-defined]  # highdicom's cache lets the whole table go
    iods, iod_of = hd_tables.get_iod_module_map(), hd_tables.get_sop_class_iod_map()
    keys = {module["key"] for modules in iods.values() for module in modules if module["ie"] in KEPT_ENTITIES}
    keys |= {module["key"] for uid in KEPT_SOP_CLASSES for module in iods[iod_of[uid]]}
    return SlimModuleTable({key: whole[key] for key in keys if key in whole})


def slim_module_table() -> None:
    """Point highdicom's SR building at the slim table (idempotent; safe from any thread)."""
    with _lock:
        for module in (hd_base, hd_tables):  # each calls the name in its own namespace
            if module.get_module_attribute_map is not _slim_table:
                module.get_module_attribute_map = _slim_table
