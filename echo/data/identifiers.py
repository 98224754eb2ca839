"""Synthetic patient and study identifiers, deterministic for (seed, study index).

UIDs come from pydicom's `generate_uid` with an entropy source built from the seed and index, so a
regenerated data set carries the same UIDs. Accession numbers and patient ids are bijections of
the index for a given seed (unique within a data set, no collisions to check). Names are drawn
from short lists of tree and colour words, so nobody mistakes them for real patients.
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass

import numpy as np
from pydicom.uid import generate_uid

_FAMILY = (
    "ALDER", "BIRCH", "CEDAR", "ELM", "HAZEL", "JUNIPER", "LARCH", "MAPLE",
    "OAK", "PINE", "ROWAN", "SPRUCE", "WILLOW", "YEW", "ASPEN", "LINDEN",
)  # fmt: skip
_GIVEN = {
    "F": ("AMBER", "CORAL", "IVY", "JADE", "OLIVE", "ROSE", "SAGE", "VIOLET"),
    "M": ("ASH", "BASIL", "CLAY", "FLINT", "GRAY", "HEATH", "REED", "STONE"),
}
_MODULUS = 10**10
# Steps are odd and not multiples of 5, so coprime with 10**10: index -> number is a bijection.
_ACCESSION_STEP = 7_919_000_037
_PATIENT_STEP = 3_571_000_019
_FIRST_DAY = dt.date(2019, 1, 1)


@dataclass(frozen=True)
class StudyIdentifiers:
    patient_name: str
    patient_id: str
    birth_date: str  # YYYYMMDD
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uids: tuple[str, str]  # frontal, lateral
    accession_number: str
    study_id: str
    study_date: str  # YYYYMMDD
    study_time: str  # HHMMSS


def _offset(seed: int, salt: str) -> int:
    return zlib.crc32(f"{salt}:{seed}".encode()) % _MODULUS


def make_identifiers(seed: int, index: int, sex: str, age: int, rng: np.random.Generator) -> StudyIdentifiers:
    def uid(kind: str) -> str:
        return generate_uid(entropy_srcs=["echo-synthetic", str(seed), str(index), kind])

    study_day = _FIRST_DAY + dt.timedelta(days=int(rng.integers(0, 7 * 365)))
    birthday = study_day - dt.timedelta(days=365 * age + int(rng.integers(0, 365)))
    seconds = int(rng.integers(7 * 3600, 22 * 3600))
    accession = (index * _ACCESSION_STEP + _offset(seed, "accession")) % _MODULUS
    patient = (index * _PATIENT_STEP + _offset(seed, "patient")) % _MODULUS
    family = _FAMILY[int(rng.integers(len(_FAMILY)))]
    given = _GIVEN[sex][int(rng.integers(len(_GIVEN[sex])))]
    return StudyIdentifiers(
        patient_name=f"{family}^{given}",
        patient_id=f"SYN{patient:010d}",
        birth_date=birthday.strftime("%Y%m%d"),
        study_instance_uid=uid("study"),
        series_instance_uid=uid("series"),
        sop_instance_uids=(uid("frontal"), uid("lateral")),
        accession_number=f"A{accession:010d}",
        study_id=str(index % 10**8 + 1),
        study_date=study_day.strftime("%Y%m%d"),
        study_time=f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
    )
