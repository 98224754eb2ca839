import pytest

from echo.findings import ATTRIBUTES
from echo.metrics.attributes import label_attributes

CASES = [
    ("Small left pleural effusion.", {"pleural_effusion": {"side": "left"}}),
    ("Left-sided pleural effusion.", {"pleural_effusion": {"side": "left"}}),
    ("Pleural effusion on the right.", {"pleural_effusion": {"side": "right"}}),
    ("Small bilateral pleural effusions.", {"pleural_effusion": {"side": "bilateral"}}),
    ("Moderate right and small left pleural effusions.", {"pleural_effusion": {"side": "bilateral"}}),
    ("Pleural effusions.", {"pleural_effusion": {"side": "bilateral"}}),
    (
        "Small right pleural effusion. Small left pleural effusion.",
        {"pleural_effusion": {"side": "bilateral"}},
    ),
    ("Blunting of the left costophrenic angle.", {"pleural_effusion": {"side": "left"}}),
    (
        "Consolidation in the right lower lobe with a small left effusion.",
        {"consolidation": {"lobe": "right lower lobe"}, "pleural_effusion": {"side": "left"}},
    ),
    ("Left apical pneumothorax.", {"pneumothorax": {"side": "left"}}),
    ("Pneumothorax at the right apex.", {"pneumothorax": {"side": "right"}}),
    (
        "A pleural line is seen at the left apex without lung markings beyond it.",
        {"pneumothorax": {"side": "left"}},
    ),
    ("1.5 cm nodule in the right upper lobe.", {"nodule": {"side": "right"}}),
    ("Nodular opacity in the left lower lobe.", {"nodule": {"side": "left"}}),
    ("Right lower lobe consolidation.", {"consolidation": {"lobe": "right lower lobe"}}),
    ("Airspace opacity in the lingula.", {"consolidation": {"lobe": "left upper lobe"}}),
    ("Retrocardiac opacity.", {"consolidation": {"lobe": "left lower lobe"}}),
    ("Consolidation at the right base.", {"consolidation": {"lobe": "right lower lobe"}}),
    ("Focal opacity in the right middle lobe.", {"consolidation": {"lobe": "right middle lobe"}}),
    ("Left upper lobe pneumonia.", {"consolidation": {"lobe": "left upper lobe"}}),
    # only positive findings carry attributes; a finding with no side word has none
    ("No left pleural effusion.", {}),
    ("Possible right lower lobe consolidation.", {}),
    ("Pneumothorax.", {}),
    ("Cardiomegaly. Right pneumothorax.", {"pneumothorax": {"side": "right"}}),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0][:60] for c in CASES])
def test_attributes(text, expected):
    assert label_attributes(text) == expected


def test_values_stay_inside_the_contract():
    # a bilateral pneumothorax has no single side, and the contract allows only left / right
    assert label_attributes("Bilateral pneumothoraces.") == {}
    for _, expected in CASES:
        for finding, attributes in expected.items():
            (key, value), *_ = attributes.items()
            assert value in ATTRIBUTES[finding][key]
