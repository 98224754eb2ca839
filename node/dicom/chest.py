"""Is this study a chest radiograph the model may draft? Decided from every radiograph's header together.

The model reads frontal chest radiographs. A study is drafted only when

1. it holds a radiograph (Modality CR or DX; presentation states, SRs and the like are ignored),
2. something names the chest (Body Part Examined CHEST, THORAX or a local spelling, or a study,
   series or protocol description such as "XR CHEST 2 VIEWS", "RX TORAX", "CXR PORTABLE"),
3. nothing names another body part ("XR HAND 3 VIEWS", Body Part Examined KNEE, "CHEST ABDOMEN"):
   a chest code contradicted by a description is refused too, the header cannot be trusted then,
4. and it is not lateral views only (unless the site allows drafting from a lateral): the views are
   read with the same evidence, in the same order, as the worker uses to pick the image it reads
   (`worker.views`: View Position, View Code Sequence, series description / protocol name, Image
   Laterality), so "no frontal here" means what the worker would see.

Reasons name the attribute and the word from this module's own vocabulary, never the header's free
text: they go to studies.skip_reason, the study's events and the log.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from pydicom import Dataset

RADIOGRAPH_MODALITIES = frozenset({"CR", "DX"})
LATERAL_ONLY_REASON = "lateral view only: waiting for a frontal"

# Body Part Examined codes (whole value, spaces/underscores/hyphens removed) and description words
# that mean the chest, in the languages sites send (accents are stripped before any lookup).
_CHEST_CODES = frozenset({"CHEST", "THORAX", "TORAX", "TORACE", "THX", "CXR", "LUNG", "LUNGS", "PULMONARY"})
# More words for descriptions: fr, es (pulmón), de, nl.
_CHEST_WORDS = _CHEST_CODES | {"CXRS", "POUMON", "POUMONS", "PULMON", "BRUSTKORB", "BORSTKAS"}
# Whole codes that name the chest together with something else: not a chest radiograph.
_COMPOUND_CODES = {
    "CHESTABDOMEN": "CHESTABDOMEN",
    "CHESTABDPELVIS": "CHESTABDPELVIS",
    "CHESTABDOMENPELVIS": "CHESTABDPELVIS",
    "THORAXABDOMEN": "CHESTABDOMEN",
    "WHOLEBODY": "WHOLEBODY",
}
# Words (and DICOM Body Part Examined defined terms) for other body parts, each its own name.
_OTHER_BODY_PARTS = """
    HEAD SKULL BRAIN FACE FACIAL SINUS SINUSES NOSE NASAL ORBIT ORBITS MANDIBLE MAXILLA JAW TMJ
    ZYGOMA DENTAL TEETH NECK LARYNX HEADNECK
    SPINE CSPINE TSPINE LSPINE SSPINE CTSPINE TLSPINE LSSPINE CERVICAL LUMBAR SACRUM COCCYX SIJOINT
    PELVIS HIP HIPS SCOLIOSIS
    ABDOMEN ABD ABDOMINAL KUB KIDNEY KIDNEYS BLADDER ABDOMENPELVIS
    SHOULDER SHOULDERS CLAVICLE SCAPULA ACJOINT SCJOINT HUMERUS ELBOW ELBOWS FOREARM RADIUS ULNA
    WRIST WRISTS HAND HANDS FINGER FINGERS THUMB SCAPHOID
    FEMUR THIGH KNEE KNEES PATELLA LEG LEGS TIBIA FIBULA ANKLE ANKLES FOOT FEET TOE TOES HEEL
    CALCANEUS EXTREMITY EXTREMITIES
    RIB RIBS STERNUM BREAST BREASTS MAMMO MAMMOGRAPHY SKELETAL BABYGRAM WHOLEBODY
"""
# Local spellings -> the English name the reasons use.
_LOCAL_SPELLINGS = {
    "SKULL": "SCHADEL SCHAEDEL CRANEO CRANE CRANIO",
    "KNEE": "KNIE RODILLA GENOU GINOCCHIO JOELHO",
    "HAND": "MANO",
    "WRIST": "HANDGELENK MUNECA POIGNET POLSO PUNHO",
    "FOOT": "FUSS PIED PIEDE",
    "ANKLE": "SPRUNGGELENK TOBILLO CHEVILLE CAVIGLIA",
    "PELVIS": "BECKEN BASSIN BACINO BACIA",
    "SHOULDER": "SCHULTER HOMBRO EPAULE SPALLA OMBRO",
    "ELBOW": "ELLENBOGEN CODO COUDE GOMITO COTOVELO",
    "HIP": "HUEFTE HUFTE CADERA HANCHE ANCA QUADRIL",
    "CSPINE": "HWS",
    "TSPINE": "BWS",
    "LSPINE": "LWS",
    "SPINE": "WIRBELSAULE COLUMNA RACHIS COLONNA COLUNA",
    "ABDOMEN": "ABDOME ADDOME BAUCH",
    "RIBS": "RIPPEN COSTILLAS COTES COSTOLE COSTELAS",
}
_OTHER_WORDS: dict[str, str] = {word: word for word in _OTHER_BODY_PARTS.split()} | {
    spelling: name for name, spellings in _LOCAL_SPELLINGS.items() for spelling in spellings.split()
}
# Other body parts as whole Body Part Examined codes only: as description words ("lateral, arm up")
# they would refuse chest protocols.
_OTHER_CODES = {"ARM": "ARM", "UPPERARM": "ARM", "UPPREXM": "ARM", "LOWEREXM": "LEG", "LOWREXM": "LEG"}
# A valid Code String (VR CS): safe to name in a reason. Anything else is described, not quoted.
_CODE_STRING = re.compile(r"^[A-Z0-9 _]{1,16}$")

# The view ladder of worker.views, kept in step with it (node does not import worker).
_FRONTAL_POSITIONS = frozenset({"PA", "AP"})
_LATERAL_POSITIONS = frozenset({"LL", "RL", "LATERAL", "LAT"})
_FRONTAL_CODES = frozenset({"399348003", "R-10214", "399214001", "R-10206"})
_LATERAL_CODES = frozenset({"399067008", "399173006", "399198007", "R-102CD", "R-10232", "R-10236"})
_FRONTAL_WORDS = re.compile(r"\b(PA|AP|P-A|A-P|FRONTAL|POSTEROANTERIOR|ANTEROPOSTERIOR)\b", re.IGNORECASE)
_LATERAL_WORDS = re.compile(r"\b(LAT|LATERAL|LL|RL)\b", re.IGNORECASE)


class View(Enum):
    FRONTAL = "frontal"
    LATERAL = "lateral"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ImageFacts:
    """What one stored instance says about its anatomy and view (header values, unvalidated)."""

    modality: str | None = None
    body_part: str | None = None
    view_position: str | None = None
    view_codes: tuple[str, ...] = ()
    study_description: str | None = None
    series_description: str | None = None
    protocol_name: str | None = None
    image_laterality: str | None = None


@dataclass(frozen=True)
class ChestDecision:
    draft: bool
    reason: str  # why: the skip reason when not drafted, the evidence when drafted; no header free text


def text_value(dataset: Dataset, keyword: str, *, strict: bool = False) -> str | None:
    """An attribute as one stripped string (values of a multi-valued one joined by backslashes), or
    None when absent or empty; a damaged element is None too, or raises when `strict`."""
    try:
        value = dataset.get(keyword)
    except Exception:  # a damaged element: as good as absent for this decision
        if strict:
            raise
        return None
    if value is None:
        return None
    if not isinstance(value, str):  # a multi-valued element
        value = "\\".join(str(item) for item in value)
    return value.strip() or None


def facts_from_dataset(dataset: Dataset) -> ImageFacts:
    try:
        items = list(dataset.get("ViewCodeSequence") or [])
    except Exception:
        items = []
    codes = tuple(str(item.get("CodeValue", "")).strip() for item in items if item.get("CodeValue"))
    modality = text_value(dataset, "Modality")
    return ImageFacts(
        modality=modality.upper() if modality else None,
        body_part=text_value(dataset, "BodyPartExamined"),
        view_position=text_value(dataset, "ViewPosition"),
        view_codes=codes,
        study_description=text_value(dataset, "StudyDescription"),
        series_description=text_value(dataset, "SeriesDescription"),
        protocol_name=text_value(dataset, "ProtocolName"),
        image_laterality=text_value(dataset, "ImageLaterality"),
    )


def _fold(text: str) -> str:
    """Upper case without accents ("Tórax" -> "TORAX", "Schädel" -> "SCHADEL")."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed if not unicodedata.combining(char)).upper()


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Z]+", _fold(text))


class _Anatomy(Enum):
    CHEST = "chest"
    OTHER = "other"
    UNKNOWN = "unknown"


def _body_part(code: str) -> tuple[_Anatomy, str]:
    """What a Body Part Examined value names, and the word to put in a reason."""
    folded = _fold(code).strip()
    whole = re.sub(r"[\s_\-]+", "", folded)
    if whole in _CHEST_CODES:
        return _Anatomy.CHEST, whole
    if whole in _COMPOUND_CODES:
        return _Anatomy.OTHER, _COMPOUND_CODES[whole]
    if whole in _OTHER_WORDS or whole in _OTHER_CODES:
        return _Anatomy.OTHER, _OTHER_WORDS.get(whole) or _OTHER_CODES[whole]
    words = _words(folded)
    others = [_OTHER_WORDS[word] for word in words if word in _OTHER_WORDS]
    if others:
        return _Anatomy.OTHER, others[0]
    if any(word in _CHEST_WORDS for word in words):
        return _Anatomy.CHEST, "CHEST"
    return _Anatomy.UNKNOWN, folded if _CODE_STRING.match(folded) else "(not a valid code)"


def _described(text: str) -> tuple[set[str], list[str]]:
    """The chest words and the other body parts (English names, in order) a description names."""
    words = _words(text)
    chest = {word for word in words if word in _CHEST_WORDS}
    others = list(dict.fromkeys(_OTHER_WORDS[word] for word in words if word in _OTHER_WORDS))
    return chest, others


def view_of(image: ImageFacts) -> View:
    """Frontal, lateral or unknown, by the worker's ladder (`worker.views._read_view`)."""
    position = (image.view_position or "").upper()
    if position in _FRONTAL_POSITIONS:
        return View.FRONTAL
    if position in _LATERAL_POSITIONS:
        return View.LATERAL
    for code in image.view_codes:
        if code in _FRONTAL_CODES:
            return View.FRONTAL
        if code in _LATERAL_CODES:
            return View.LATERAL
    for text in (image.series_description, image.protocol_name):
        if not text:
            continue
        frontal, lateral = _FRONTAL_WORDS.search(text), _LATERAL_WORDS.search(text)
        if frontal and not lateral:
            return View.FRONTAL
        if lateral and not frontal:
            return View.LATERAL
    laterality = (image.image_laterality or "").upper()
    if laterality == "B":
        return View.FRONTAL
    if laterality in {"L", "R"}:
        return View.LATERAL
    return View.UNKNOWN


def _modalities(images: Iterable[ImageFacts]) -> str:
    named = sorted({image.modality for image in images if image.modality})
    shown = [name if _CODE_STRING.match(name) else "(not a valid code)" for name in named]
    return ", ".join(shown) or "unspecified"


_DESCRIPTIONS = (
    ("study description", "study_description"),
    ("series description", "series_description"),
    ("protocol name", "protocol_name"),
)


def decide(images: Sequence[ImageFacts], *, allow_lateral_only: bool = False) -> ChestDecision:
    """Whether to draft the study made of `images`, and why (see the module docstring)."""
    radiographs = [image for image in images if image.modality in RADIOGRAPH_MODALITIES]
    if not radiographs:
        shown = _modalities(images)
        verb = "are" if ", " in shown else "is"
        noun = "modalities" if ", " in shown else "modality"
        return ChestDecision(False, f"{noun} {shown} {verb} not CR or DX")

    chest_evidence: list[str] = []
    unknown_codes: list[str] = []
    body_part_other: str | None = None
    for image in radiographs:
        if image.body_part is None:
            continue
        anatomy, word = _body_part(image.body_part)
        if anatomy is _Anatomy.CHEST:
            chest_evidence.append(f"Body Part Examined {word}")
        elif anatomy is _Anatomy.OTHER:
            body_part_other = body_part_other or word
        else:
            unknown_codes.append(word)
    if body_part_other is not None:
        return ChestDecision(False, f"body part {body_part_other} is not CHEST")
    for label, attribute in _DESCRIPTIONS:
        for image in radiographs:
            text = getattr(image, attribute)
            if not text:
                continue
            chest_words, others = _described(text)
            if others:
                return ChestDecision(False, f"{label} names {others[0]}, not CHEST")
            if chest_words:
                chest_evidence.append(f"{label} names {sorted(chest_words)[0]}")
    if not chest_evidence:
        if unknown_codes:
            return ChestDecision(
                False, f"body part {unknown_codes[0]} is not a chest code and no description names the chest"
            )
        return ChestDecision(False, "no body part or description names the chest")

    views = [view_of(image) for image in radiographs]
    if all(view is View.LATERAL for view in views):
        if not allow_lateral_only:
            return ChestDecision(False, LATERAL_ONLY_REASON)
        return ChestDecision(True, f"chest radiograph ({chest_evidence[0]}); lateral views only, allowed")
    return ChestDecision(True, f"chest radiograph ({chest_evidence[0]})")
