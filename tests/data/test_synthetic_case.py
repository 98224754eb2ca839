from __future__ import annotations

from collections import Counter

import pytest

from echo.data.case import make_case, sample_case
from echo.data.streams import component_rng
from echo.findings import ATTRIBUTES, FINDINGS


def _cases(n: int, seed: int = 0):
    return [sample_case(component_rng(seed, index, "case")) for index in range(n)]


def test_prevalence_is_about_a_quarter_normal_and_each_finding_8_to_20_percent() -> None:
    cases = _cases(4000)
    normal = sum(case.is_normal for case in cases) / len(cases)
    counts = Counter(name for case in cases for name in case.positives)
    assert 0.2 <= normal <= 0.32, normal
    for name in FINDINGS:
        assert 0.08 <= counts[name] / len(cases) <= 0.2, (name, counts[name] / len(cases))


def test_labels_cover_every_class_and_attributes_only_positive_findings() -> None:
    for case in _cases(500, seed=3):
        assert set(case.labels) == set(FINDINGS)
        assert {name for name, value in case.labels.items() if value == "positive"} == set(case.positives)
        for name, values in case.attributes.items():
            assert case.labels[name] == "positive"
            for key, value in values.items():
                assert value in ATTRIBUTES[name][key]
        for name in ATTRIBUTES:
            assert (name in case.attributes) == (name in case.positives)


def test_acquisitions_vary_across_encodings_views_and_bit_depths() -> None:
    acquisitions = [case.acquisition for case in _cases(400, seed=5)]
    assert {a.modality for a in acquisitions} == {"CR", "DX"}
    assert {a.photometric for a in acquisitions} == {"MONOCHROME1", "MONOCHROME2"}
    assert {a.view for a in acquisitions} == {"PA", "AP"}
    assert {a.bits_stored for a in acquisitions} == {12, 14, 15, 16}
    assert any(a.compressed for a in acquisitions) and not all(a.compressed for a in acquisitions)
    assert any(a.lateral for a in acquisitions) and all(a.view == "PA" for a in acquisitions if a.lateral)
    assert any(a.voi == "lut" for a in acquisitions)


def test_same_seed_and_index_give_the_same_case_and_another_seed_differs() -> None:
    assert sample_case(component_rng(4, 9, "case")) == sample_case(component_rng(4, 9, "case"))
    assert [c.body for c in _cases(20, seed=1)] != [c.body for c in _cases(20, seed=2)]


def test_without_removes_only_that_finding() -> None:
    case = next(c for c in _cases(300) if len(c.positives) >= 2)
    removed, kept = list(case.positives)[:2]
    lighter = case.without(removed)
    assert removed not in lighter.positives and kept in lighter.positives
    assert lighter.body == case.body and lighter.acquisition == case.acquisition


def test_negative_seed_is_rejected() -> None:
    with pytest.raises(ValueError, match="seed and index must be non-negative"):
        component_rng(-1, 0, "case")


def test_unknown_finding_is_rejected() -> None:
    case = _cases(1)[0]
    with pytest.raises(ValueError, match=r"unknown finding\(s\) \['fracture'\]"):
        make_case({"fracture": {}}, case.body, case.acquisition)
