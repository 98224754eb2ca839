import pytest

from echo.findings import FINDINGS, Label
from echo.metrics.labeler import label_report

P, N, U = Label.POSITIVE, Label.NEGATIVE, Label.UNCERTAIN
SIX = ("cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation", "nodule", "edema")

CASES = [
    # plain positives, one per class and synonym family
    ("Cardiomegaly.", {"cardiomegaly": P}),
    ("The heart is enlarged.", {"cardiomegaly": P}),
    ("Heart size is enlarged.", {"cardiomegaly": P}),
    ("The cardiac silhouette is moderately enlarged.", {"cardiomegaly": P}),
    ("Enlarged heart.", {"cardiomegaly": P}),
    ("Small left pleural effusion.", {"pleural_effusion": P}),
    ("Blunting of the right costophrenic angle.", {"pleural_effusion": P}),
    ("The left costophrenic angle is blunted.", {"pleural_effusion": P}),
    ("Right pneumothorax.", {"pneumothorax": P}),
    ("A pleural line is seen at the left apex without lung markings beyond it.", {"pneumothorax": P}),
    ("Right lower lobe consolidation.", {"consolidation": P}),
    ("Airspace opacity in the left upper lobe.", {"consolidation": P}),
    ("1.5 cm nodule in the right upper lobe.", {"nodule": P}),
    ("Nodular opacity in the left lower lobe.", {"nodule": P}),
    ("Right hilar mass.", {"nodule": P}),
    ("Mild pulmonary edema.", {"edema": P}),
    ("Pulmonary vascular congestion.", {"edema": P}),
    ("Interstitial edema with Kerley B lines.", {"edema": P}),
    ("Endotracheal tube terminates 4 cm above the carina.", {"endotracheal_tube": P}),
    ("ET tube in standard position.", {"endotracheal_tube": P}),
    ("ETT tip at the thoracic inlet.", {"endotracheal_tube": P}),
    ("Right internal jugular central venous catheter tip in the SVC.", {"central_line": P}),
    ("Left PICC line terminates in the mid SVC.", {"central_line": P}),
    ("Right internal jugular line in place.", {"central_line": P}),
    ("Left chest wall pacemaker with leads in the right atrium and ventricle.", {"pacemaker": P}),
    ("Cardiac device in place.", {"pacemaker": P}),
    ("Pacer leads are intact.", {"pacemaker": P}),
    # negation and its scope
    ("No pleural effusion or pneumothorax.", {"pleural_effusion": N, "pneumothorax": N}),
    (
        "There is no focal consolidation, pleural effusion, or pneumothorax.",
        {"consolidation": N, "pleural_effusion": N, "pneumothorax": N},
    ),
    ("Heart size is not enlarged.", {"cardiomegaly": N}),
    ("Without evidence of pulmonary edema.", {"edema": N}),
    ("Negative for pneumothorax.", {"pneumothorax": N}),
    ("The lungs are free of consolidation.", {"consolidation": N}),
    ("Lungs are clear of focal opacity.", {"consolidation": N}),
    ("No evidence of pneumothorax.", {"pneumothorax": N}),
    ("No focal opacity to suggest pneumonia.", {"consolidation": N}),
    ("The pneumothorax has resolved.", {"pneumothorax": N}),
    ("Resolved right pleural effusion.", {"pleural_effusion": N}),
    ("The endotracheal tube has been removed.", {"endotracheal_tube": N}),
    ("Interval removal of the right PICC.", {"central_line": N}),
    ("Pneumothorax is no longer seen.", {"pneumothorax": N}),
    ("Pneumothorax: none.", {"pneumothorax": N}),
    ("No blunting of the costophrenic angles.", {"pleural_effusion": N}),
    # a cue stops at a new statement
    ("No pneumothorax, small left pleural effusion.", {"pneumothorax": N, "pleural_effusion": P}),
    ("No effusion but there is a small right pneumothorax.", {"pleural_effusion": N, "pneumothorax": P}),
    (
        "The cardiac silhouette is enlarged without pulmonary edema.",
        {"cardiomegaly": P, "edema": N},
    ),
    ("Small left effusion; no pneumothorax.", {"pleural_effusion": P, "pneumothorax": N}),
    ("No fracture and the heart is enlarged.", {"cardiomegaly": P}),
    ("Small left effusion, pneumothorax has resolved.", {"pleural_effusion": P, "pneumothorax": N}),
    (
        "Effusion, pneumothorax and consolidation have resolved.",
        {"pleural_effusion": N, "pneumothorax": N, "consolidation": N},
    ),
    ("The heart is enlarged, pneumothorax is not seen.", {"cardiomegaly": P, "pneumothorax": N}),
    ("No change in the small left pleural effusion.", {"pleural_effusion": P}),
    # uncertainty
    ("Possible right lower lobe consolidation.", {"consolidation": U}),
    ("A small pneumothorax cannot be excluded.", {"pneumothorax": U}),
    ("Findings may represent early pulmonary edema.", {"edema": U}),
    ("Suspicious for right lower lobe pneumonia.", {"consolidation": U}),
    ("Questionable small left pleural effusion.", {"pleural_effusion": U}),
    ("Likely small bilateral pleural effusions.", {"pleural_effusion": U}),
    ("Opacity at the right base concerning for pneumonia.", {"consolidation": P}),
    ("Atelectasis versus consolidation at the left base.", {"consolidation": U}),
    ("Heart size is borderline.", {"cardiomegaly": U}),
    ("Pneumothorax is not excluded.", {"pneumothorax": U}),
    # generic normals cover the classes they speak for
    ("The lungs are clear.", {"consolidation": N, "edema": N, "nodule": N}),
    ("No acute cardiopulmonary process.", dict.fromkeys(SIX, N)),
    ("Heart size is normal.", {"cardiomegaly": N}),
    ("Normal heart size and mediastinal contours.", {"cardiomegaly": N}),
    ("The cardiomediastinal silhouette is within normal limits.", {"cardiomegaly": N}),
    ("The costophrenic angles are sharp.", {"pleural_effusion": N}),
    ("No support devices.", {"endotracheal_tube": N, "central_line": N, "pacemaker": N}),
    ("No lines or tubes.", {"endotracheal_tube": N, "central_line": N, "pacemaker": N}),
    (
        "Endotracheal tube in standard position. No other support devices.",
        {"endotracheal_tube": P, "central_line": N, "pacemaker": N},
    ),
    ("Support devices are in standard position.", {}),
    # findings outside the nine classes are not counted
    ("No pericardial effusion.", {}),
    ("No acute osseous abnormality.", {}),
    ("Nasogastric tube courses below the diaphragm.", {}),
    ("Mild bibasilar atelectasis.", {}),
    # a specific positive outranks a generic negative elsewhere in the report
    (
        "Right upper lobe nodule. The lungs are otherwise clear.",
        {"nodule": P, "consolidation": N, "edema": N},
    ),
    ("Mild cardiomegaly. No acute cardiopulmonary process.", {**dict.fromkeys(SIX, N), "cardiomegaly": P}),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0][:60] for c in CASES])
def test_sentence_labels(text, expected):
    assert label_report(text) == expected


def test_case_table_is_broad():
    assert len(CASES) >= 30
    positives = {name for _, expected in CASES for name, label in expected.items() if label is P}
    assert positives == set(FINDINGS)


def test_full_report_with_sections():
    report = (
        "FINDINGS: Endotracheal tube terminates 5 cm above the carina. Right internal jugular central "
        "venous catheter tip in the SVC. The heart size is mildly enlarged. There is a small left "
        "pleural effusion with blunting of the left costophrenic angle. No pneumothorax. The lungs are "
        "otherwise clear. No acute osseous abnormality.\n"
        "IMPRESSION: Small left pleural effusion. Mild cardiomegaly. Support devices as above."
    )
    assert label_report(report) == {
        "endotracheal_tube": P,
        "central_line": P,
        "cardiomegaly": P,
        "pleural_effusion": P,
        "pneumothorax": N,
        "consolidation": N,
        "edema": N,
        "nodule": N,
    }


def test_case_and_spacing_do_not_matter():
    assert label_report("NO   PLEURAL\nEFFUSION OR\n  PNEUMOTHORAX") == {
        "pleural_effusion": N,
        "pneumothorax": N,
    }
    assert label_report("No pleural effusion\n\nPneumothorax") == {"pleural_effusion": N, "pneumothorax": P}
    assert label_report("") == {}
    assert label_report("1.5 cm nodule. No effusion.") == {"nodule": P, "pleural_effusion": N}
