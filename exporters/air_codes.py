"""The codes of the AI Results SR: each finding class, its presence, its side and its lobe.

Where a code is in DICOM PS3.16 it is taken from pydicom's code dictionary (`pydicom.sr.codedict`,
generated from PS3.16), so a typo fails at import instead of going out in a report. Where it is
not, it is written here by hand from SNOMED CT International and marked so below.

Finding (the concept name of the qualitative evaluation)::

    cardiomegaly       SCT 8186001    Cardiomegaly             SNOMED CT (disorder), by hand [1]
    pleural_effusion   SCT 60046008   Pleural effusion         PS3.16 CID 645, CID 8134
    pneumothorax       SCT 36118008   Pneumothorax             PS3.16 CID 6102 (chest findings)
    consolidation      SCT 95436008   Lung consolidation       SNOMED CT (disorder), by hand [2]
    nodule             SCT 27925004   Nodule                   PS3.16 CID 6102; site: lung [3]
    edema              SCT 19242006   Pulmonary edema          PS3.16 CID 3700
    endotracheal_tube  SCT 26412008   Endotracheal tube        PS3.16 CID 6102, CID 6138
    central_line       SCT 52124006   Central venous catheter  PS3.16 CID 74 [4]
    pacemaker          SCT 14106009   Cardiac pacemaker        PS3.16 CID 6102, CID 6138

Presence (the value), PS3.16 CID 240 "Present-Absent"::

    positive   SCT 52101004   Present
    negative   SCT 272519000  Absent         [5]
    uncertain  SCT 373068000  Undetermined   the draft hedges ("possible edema")

Side (the laterality of the finding site), PS3.16 CID 244 "Laterality"::

    left SCT 7771000 Left, right SCT 24028007 Right, bilateral SCT 51440002 Bilateral

Site (the finding site's anatomic location): a lobe is post-coordinated as DICOM does it, the lobe
of PS3.16 CID 6170 "Lobe of Lung" (SCT 45653009 Upper lobe of lung, 72481006 Middle lobe of right
lung, 90572001 Lower lobe of lung) with the side as its laterality. A side alone goes on the
structure the finding lies in: SCT 3120008 Pleura for an effusion or a pneumothorax, SCT 39607008
Lung for a nodule (both PS3.16 CID 7151 / CID 8134).

Procedure reported (TID 1500 row 4, CID 100, extensible): LN 43468-8 "XR unspecified body region",
the only projection radiography entry of CID 100; it has no chest radiograph code.

No class needed a RadLex code: every one has a SNOMED CT concept.

Where this table is unsure:

[1] DICOM lists "Cardiomegaly" only as SCT 287272002, in the fetal ultrasound CIDs 12248/12249,
    and pydicom's dictionary gives that code the SNOMED name "Enlarged septal foramen of heart";
    8186001 |Cardiomegaly (disorder)| is the SNOMED CT concept for an enlarged heart. It was checked
    against public code lists, not against a SNOMED CT release.
[2] No DICOM CID has consolidation. 95436008 |Lung consolidation (disorder)| is checked against
    an OHDSI vocabulary listing, not against a SNOMED CT release.
[3] 27925004 is the morphology "Nodule", as DICOM's chest CAD codes it; the finding site (lung,
    with its side) makes it pulmonary.
[4] DICOM's chest object list (CID 6138) names a central line DCM 112174 "Central line"; the SNOMED
    CT concept is preferred here, as for every class.
[5] Absent: SNOMED CT also has 2667000 |Absent (qualifier value)| (the Open Imaging Finding Models
    use it); CID 240 has 272519000, and a DICOM SR follows CID 240.
"""

from __future__ import annotations

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from echo.findings import Label

FINDING_CODES: dict[str, Code] = {
    "cardiomegaly": Code("8186001", "SCT", "Cardiomegaly"),
    "pleural_effusion": codes.SCT.PleuralEffusion,
    "pneumothorax": codes.SCT.Pneumothorax,
    "consolidation": Code("95436008", "SCT", "Lung consolidation"),
    "nodule": codes.SCT.Nodule,
    "edema": codes.SCT.PulmonaryEdema,
    "endotracheal_tube": codes.SCT.EndotrachealTube,
    "central_line": codes.SCT.CentralVenousCatheter,
    "pacemaker": codes.SCT.CardiacPacemaker,
}

PRESENCE_CODES: dict[Label, Code] = {
    Label.POSITIVE: codes.cid240.Present,
    Label.NEGATIVE: codes.cid240.Absent,
    Label.UNCERTAIN: codes.cid240.Undetermined,
}

LATERALITY_CODES: dict[str, Code] = {
    "left": codes.cid244.Left,
    "right": codes.cid244.Right,
    "bilateral": codes.cid244.Bilateral,
}

# lobe -> (anatomic location from CID 6170, side)
LOBE_SITES: dict[str, tuple[Code, str]] = {
    "right upper lobe": (codes.cid6170.UpperLobeOfLung, "right"),
    "right middle lobe": (codes.cid6170.MiddleLobeOfRightLung, "right"),
    "right lower lobe": (codes.cid6170.LowerLobeOfLung, "right"),
    "left upper lobe": (codes.cid6170.UpperLobeOfLung, "left"),
    "left lower lobe": (codes.cid6170.LowerLobeOfLung, "left"),
}

# finding -> the structure a side alone is the side of
SIDE_SITES: dict[str, Code] = {
    "pleural_effusion": codes.SCT.Pleura,
    "pneumothorax": codes.SCT.Pleura,
    "nodule": codes.SCT.Lung,
}

PROCEDURE_REPORTED = codes.cid100.XRUnspecifiedBodyRegion
