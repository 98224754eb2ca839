"""De-identification for a data set export: DICOM by the PS3.15 basic profile, report text by what the
header says is identifying, and stable pseudonyms keyed by a secret that never leaves the node.

DICOM (`Deidentifier`): PS3.15 Annex E, Basic Application Level Confidentiality Profile, with the
Retain Longitudinal Temporal Information with Modified Dates Option. In order:

1. removed (action X): private attributes; curve (50xx) and overlay (60xx) groups; the attributes of
   `REMOVED` (free text, descriptions, comments, other names and ids, addresses, physicians and
   operators, institution and station, device serial numbers, the request and the procedure step);
2. emptied (action Z): `EMPTIED` (birth date, sex, referring physician, content creator);
3. replaced by dicognito (a maintained library, seeded with a key derived from the site secret, so
   the same input gives the same output in every export): every UID but class and transfer syntax
   UIDs (U), every person name (D), Patient ID, Accession Number, Study ID and the other ids (D), and
   every date and date-time shifted back by one secret offset of 62 to 730 days (the option), times
   with their date;
4. marked: Patient Identity Removed YES, De-identification Method and its Code Sequence (113100
   basic profile, 113107 modified dates), Longitudinal Temporal Information Modified MODIFIED.

Pixel Data is not touched. An image whose Burned In Annotation is YES is not exported at all
(`burned_in`); an image without the attribute is exported, its pixels unchecked: the README says so.

Report text (`scrub_text`): the patient's ids and accession number and the name as the header
spells it, and numeric dates, are replaced; other free text is kept as signed.

The site secret (`site_secret`): 32 random bytes in <ECHO_DATA_DIR>/site-secret, made on first use,
readable by the node's user only. Pseudonyms and the split are HMAC-SHA256 of the value under it: the
same patient gets the same pseudonym and split in every export, and nobody without the file can
compute them from a patient id. Lose the file and the next export splits and names differently.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable
from importlib.metadata import version
from pathlib import Path

from dicognito.anonymizer import Anonymizer
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

SECRET_NAME = "site-secret"
SECRET_BYTES = 32
DEID_METHOD = "PS3.15 basic profile, modified dates; dicognito {version}"  # LO: 64 characters at most
PROFILE_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
)

# Action X of the basic profile (PS3.15 Table E.1-1) for the attributes CR/DX headers carry, and
# their neighbours. Keywords as pydicom spells them (a test checks every one is known).
REMOVED = tuple(
    """
    AcquisitionComments AcquisitionContextSequence AcquisitionDeviceProcessingDescription
    AcquisitionProtocolDescription ActualHumanPerformersSequence AdditionalPatientHistory AdmissionID
    AdmittingDiagnosesCodeSequence AdmittingDiagnosesDescription Allergies AuthorObserverSequence
    BranchOfService CommentsOnThePerformedProcedureStep ConsultingPhysicianName ContentSequence
    CountryOfResidence CurrentPatientLocation CustodialOrganizationSequence DerivationDescription
    DetectorID DeviceDescription DeviceSerialNumber DigitalSignaturesSequence
    DischargeDiagnosisDescription EncryptedAttributesSequence EthnicGroup FrameComments GantryID
    ImageComments ImagePresentationComments InstitutionAddress InstitutionCodeSequence InstitutionName
    InstitutionalDepartmentName InsurancePlanIdentification IssuerOfAdmissionIDSequence IssuerOfPatientID
    IssuerOfPatientIDQualifiersSequence MedicalAlerts MedicalRecordLocator MilitaryRank
    ModifiedAttributesSequence NameOfPhysiciansReadingStudy Occupation OperatorIdentificationSequence
    OperatorsName OriginalAttributesSequence OtherPatientIDs OtherPatientIDsSequence OtherPatientNames
    PatientAddress PatientAge PatientBirthName PatientBirthTime PatientComments
    PatientInsurancePlanCodeSequence PatientMotherBirthName PatientPrimaryLanguageCodeSequence
    PatientReligiousPreference PatientSize PatientState PatientTelecomInformation PatientTelephoneNumbers
    PatientWeight PerformedLocation PerformedProcedureStepDescription PerformedProcedureStepEndDate
    PerformedProcedureStepEndTime PerformedProcedureStepID PerformedProcedureStepStartDate
    PerformedProcedureStepStartTime PerformedStationAETitle PerformedStationName PerformingPhysicianName
    PerformingPhysicianIdentificationSequence PhysiciansOfRecord PhysiciansOfRecordIdentificationSequence
    PhysiciansReadingStudyIdentificationSequence PlateID PreMedication PregnancyStatus ProtocolName
    ReasonForStudy ReasonForTheRequestedProcedure ReferencedPatientAliasSequence ReferencedPatientSequence
    ReferencedPerformedProcedureStepSequence ReferencedStudySequence ReferringPhysicianAddress
    ReferringPhysicianIdentificationSequence ReferringPhysicianTelephoneNumbers RequestAttributesSequence
    RequestedContrastAgent RequestedProcedureComments RequestedProcedureDescription RequestedProcedureID
    RequestedProcedureLocation RequestingPhysician RequestingService ResponsibleOrganization
    ResponsiblePerson ResultsComments ScheduledPerformingPhysicianName ScheduledProcedureStepDescription
    ScheduledProcedureStepID ScheduledStationAETitle ScheduledStationName SeriesDescription
    ServiceEpisodeDescription ServiceEpisodeID SmokingStatus SoftwareVersions SpecialNeeds StationName
    StudyComments StudyDescription StudyIDIssuer TextComments TextString TimezoneOffsetFromUTC
    TopicAuthor TopicKeywords TopicSubject TopicTitle VisitComments
    """.split()  # noqa: SIM905 - a table to read, not a list to edit
)
# Action Z: kept, with an empty value.
EMPTIED = ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "ContentCreatorName")
# File meta that names the sender.
_META_REMOVED = (
    "SourceApplicationEntityTitle",
    "SendingApplicationEntityTitle",
    "ReceivingApplicationEntityTitle",
)
_NUMERIC_DATE = re.compile(r"\b\d{1,4}[/.\-]\d{1,2}[/.\-]\d{2,4}\b")
REMOVED_TEXT = "[removed]"


def site_secret(data_dir: Path) -> bytes:
    """The node's secret for pseudonyms and splits, made (owner-only) on first use."""
    path = data_dir / SECRET_NAME
    with contextlib.suppress(FileNotFoundError):
        return _read_secret(path)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another export made it a moment ago
        return _read_secret(path)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_hex(SECRET_BYTES) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    text = path.read_text().strip()
    if len(text) < 2 * SECRET_BYTES:
        raise ValueError(f"{path} is not a site secret (expected {2 * SECRET_BYTES} hex digits)")
    return bytes.fromhex(text)


def keyed(secret: bytes, purpose: str, value: str) -> bytes:
    """HMAC-SHA256 of `value` for one `purpose` ("split", "study" ...) under the site secret."""
    return hmac.new(secret, f"{purpose}|{value}".encode(), hashlib.sha256).digest()


def pseudonym(secret: bytes, purpose: str, value: str, length: int = 16) -> str:
    return keyed(secret, purpose, value).hex()[:length]


def burned_in(dataset: Dataset) -> bool:
    """Burned In Annotation says YES: text in the pixels that a header profile cannot remove."""
    return str(dataset.get("BurnedInAnnotation") or "").strip().upper() == "YES"


class Deidentifier:
    """Applies the profile above to data sets in place; one per export, so ids agree across files."""

    def __init__(self, secret: bytes) -> None:
        self._anonymizer = Anonymizer(seed=keyed(secret, "dicognito", "").hex())
        self.method = DEID_METHOD.format(version=version("dicognito"))

    def __call__(self, dataset: Dataset) -> Dataset:
        dataset.remove_private_tags()
        for tag in [element.tag for element in dataset if element.tag.group >> 8 in (0x50, 0x60)]:
            del dataset[tag]  # curves and overlays (odd groups 5000-501E, 6000-601E)
        _strip(dataset)
        for keyword in _META_REMOVED:
            if keyword in dataset.file_meta:
                delattr(dataset.file_meta, keyword)
        self._anonymizer.anonymize(dataset)
        dataset.PatientIdentityRemoved = "YES"
        dataset.DeidentificationMethod = self.method
        dataset.DeidentificationMethodCodeSequence = Sequence(
            [_code(value, meaning) for value, meaning in PROFILE_CODES]
        )
        dataset.LongitudinalTemporalInformationModified = "MODIFIED"
        return dataset


def _strip(dataset: Dataset) -> None:
    """Actions X and Z, in the data set and every nested item."""
    for keyword in REMOVED:
        if keyword in dataset:
            delattr(dataset, keyword)
    for keyword in EMPTIED:
        if keyword in dataset:
            dataset.data_element(keyword).value = None  # type: ignore[union-attr]
    for element in list(dataset):
        if element.VR == "SQ":
            for item in element.value:
                _strip(item)


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def header_identifiers(dataset: Dataset) -> list[str]:
    """What `scrub_text` looks for: ids, accession and the patient's name as the header spells it."""
    found = []
    for keyword in ("PatientID", "AccessionNumber", "OtherPatientIDs", "StudyID"):
        value = dataset.get(keyword)
        values = [value] if isinstance(value, str) else list(value or [])
        found += [str(item).strip() for item in values]
    name = dataset.get("PatientName")
    if name:
        parts = [part for part in (name.family_name, name.given_name) if part]
        found.append(str(name))
        if len(parts) == 2:
            family, given = parts
            found += [f"{given} {family}", f"{family}, {given}", f"{family} {given}"]
    return [value for value in found if len(value) >= 3]


def scrub_text(text: str, identifiers: Iterable[str]) -> str:
    """`text` without the given identifiers (whole words, any case) and without numeric dates."""
    for value in sorted(set(identifiers), key=len, reverse=True):
        text = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", REMOVED_TEXT, text, flags=re.IGNORECASE)
    return _NUMERIC_DATE.sub("[date]", text)
