"""The draft's coded findings as FHIR R4 Observations, contained in its DiagnosticReport.

One ``Observation`` per reading (`exporters.readings`): code SNOMED CT, value Present / Absent /
Undetermined, bodySite the lobe or the structure with its side, device -> the model, the decoding
as the method. The codes are the AI Results SR's (`exporters.air_codes`), so SR and FHIR code a
finding alike.

The Observations are contained because they have no life outside this draft: they are the model's
reading of its own text, replaced whole when a later draft of the study replaces the report, so
no finding of a superseded draft is left behind as a standalone Observation of the patient; and
one entry per finding would push the Bundle past what servers run as one conditional transaction
(Medplum refuses more than 8 entries that need strict isolation).

The FHIR helpers the report builder (`exporters.fhir`) shares with the Observations live here too:
a pydicom `Code` as a FHIR Coding, and `validated`, which builds a fhir.resources model and turns
its ValidationError into a one-line ValueError without the value.
"""

from __future__ import annotations

from datetime import date, datetime

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.reference import Reference
from pydantic import ValidationError
from pydicom.sr.coding import Code

from exporters.air_codes import FINDING_CODES, LATERALITY_CODES, LOBE_SITES, PRESENCE_CODES, SIDE_SITES
from exporters.identity import ModelIdentity
from exporters.readings import FindingReading

__all__ = ["LOINC", "SNOMED_CT", "coding", "concept", "observation", "validated"]

LOINC = "http://loinc.org"
SNOMED_CT = "http://snomed.info/sct"
_CODE_SYSTEMS = {"SCT": SNOMED_CT, "LN": LOINC, "DCM": "http://dicom.nema.org/resources/ontology/DCM"}
_OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
_LATERALITY_ATTRIBUTE = "272741003"  # SNOMED CT |Laterality (attribute)|, for post-coordination


def validated(model_class, what: str, **fields):
    """A fhir.resources model from `fields` (None values left out); a ValidationError becomes a
    ValueError naming the element, without the value (it may be a patient identifier)."""
    try:
        return model_class(**{name: value for name, value in fields.items() if value is not None})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in error.errors()
        )
        raise ValueError(f"{what} is not valid FHIR: {problems}") from None


def coding(code: Code) -> Coding:
    """A pydicom code (SCT, LN or DCM) as a FHIR Coding with its system's URI."""
    system = _CODE_SYSTEMS.get(code.scheme_designator)
    if system is None:
        raise ValueError(f"no FHIR system for the coding scheme {code.scheme_designator!r}")
    return Coding(system=system, code=code.value, display=code.meaning)


def concept(*codings: Coding) -> CodeableConcept:
    return CodeableConcept(coding=list(codings))


def observation(
    reading: FindingReading,
    status: str,
    patient: Reference,
    effective: datetime | date | None,
    issued: datetime,
    model: ModelIdentity,
    device_url: str,
) -> Observation:
    """One coded finding, contained in the report (so without meta: R4 dom-4, dom-5).

    `reading` is checked by `exporters.readings.check_readings`; `device_url` is the Bundle's
    fullUrl of the model's Device.
    """
    return validated(
        Observation,
        f"the {reading.finding} Observation",
        id=reading.finding.replace("_", "-"),
        status=status,
        category=[concept(Coding(system=_OBSERVATION_CATEGORY, code="imaging", display="Imaging"))],
        code=concept(coding(FINDING_CODES[reading.finding])),
        subject=patient,
        effectiveDateTime=effective,
        issued=issued,
        valueCodeableConcept=concept(coding(PRESENCE_CODES[reading.label])),
        bodySite=_body_site(reading),
        method=CodeableConcept(text=f"decoding: {model.decoding}") if model.decoding else None,
        device=Reference(reference=device_url, type="Device", display=model.label),
    )


def _body_site(reading: FindingReading) -> CodeableConcept | None:
    """The lobe, or the structure a side alone is the side of, refined by its laterality.

    R4 Observation has no laterality element: the site and its side go in one SNOMED CT
    post-coordinated expression (``site:272741003=side``, which FHIR allows as a code of
    http://snomed.info/sct), as the SR pairs the site with a laterality modifier, and in words.
    `check_readings` lets a side only on a finding of `SIDE_SITES` and a lobe only of `LOBE_SITES`.
    """
    if reading.lobe is not None:
        site, side = LOBE_SITES[reading.lobe]
        text = reading.lobe
    elif reading.side is not None:
        site, side = SIDE_SITES[reading.finding], reading.side
        text = f"{reading.side} {site.meaning.lower()}"
    else:
        return None
    expression = f"{site.value}:{_LATERALITY_ATTRIBUTE}={LATERALITY_CODES[side].value}"
    return CodeableConcept(coding=[Coding(system=SNOMED_CT, code=expression)], text=text)
