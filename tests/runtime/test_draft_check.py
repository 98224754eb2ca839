"""The draft gate's model half: draft_problems on literal drafts, and gated_generate re-decoding a
broken draft with more steps per block, on a stand-in engine and on the tiny exported model."""

from __future__ import annotations

from dataclasses import replace

import pytest

from echo.errors import UserError
from echo.runtime.draft_check import DraftGate, draft_problems, gate_counts, gated_generate
from echo.runtime.result import GeneratedReport

CLEAN = "FINDINGS: The heart is normal in size. Lungs are clear.\nIMPRESSION: No acute disease."


def draft(
    text: str = CLEAN, confidences=(0.95, 0.9, 0.99), decode: str = "onestep", **fields
) -> GeneratedReport:
    return GeneratedReport(
        findings="", impression="", text=text, tokens=len(confidences), token_ids=(), forwards=1,
        seconds=0.0, decode=decode, confidences=tuple(confidences), **fields,
    )  # fmt: skip


def test_a_clean_confident_draft_has_no_problems() -> None:
    assert draft_problems(draft()) == []


def test_each_failure_is_named() -> None:
    assert draft_problems(draft("FINDINGS: The the heart is normal.\nIMPRESSION: Normal.")) == [
        "1 adjacent duplicated word(s): 'the the'"
    ]
    assert draft_problems(draft("FINDINGS: Lungs are clear.\nIMPRESSION: -")) == [
        "missing or empty section(s): IMPRESSION"
    ]
    # the one-step student's draft of the demo study, re-decoded multi-step: no duplicate, both sections
    demo = "FINDINGS: The mediastinal contours. normal. The hila are normal.\nIMPRESSION: Right lung nodule.."
    assert draft_problems(draft(demo)) == ["2 broken sentence(s): 'normal.', 'Right lung nodule..'"]
    assert draft_problems(draft(confidences=(0.9, 0.5, 0.4)), min_mean_confidence=0.8) == [
        "mean token confidence 0.600 below 0.800"
    ]


def test_a_draft_like_the_demo_one_of_issue_16_fails_on_every_count() -> None:
    text = (
        "FINDINGS: The is moderate pacemaker. The mediastinal contours are.. Normal heart contours. "
        "No is effusion focal- There pulmonary moderate the in the right the No nodule nodule nodule "
        "effusion effusion pleural pleural.\nIMPRESSION: -"
    )
    problems = draft_problems(draft(text, confidences=(0.3, 0.5)), min_mean_confidence=0.8)
    assert problems == [
        "4 adjacent duplicated word(s): 'nodule nodule', 'effusion effusion', 'pleural pleural'",
        "1 broken sentence(s): 'The mediastinal contours are..'",
        "missing or empty section(s): IMPRESSION",
        "mean token confidence 0.400 below 0.800",
    ]
    text_more = "FINDINGS: A a b b c c d d. Heart. effusion. nodule. edema. mass.\nIMPRESSION: X."
    assert draft_problems(draft(text_more))[0].endswith("'c c', ...")
    assert (
        draft_problems(draft(text_more))[1] == "4 broken sentence(s): 'effusion.', 'nodule.', 'edema.', ..."
    )


def test_the_confidence_check_can_be_off_and_never_holds_a_draft_without_confidences() -> None:
    unsure = draft(confidences=(0.1, 0.2))
    assert draft_problems(unsure, min_mean_confidence=None) == []
    assert draft_problems(draft(confidences=()), min_mean_confidence=0.99) == []


class StandIn:
    """Answers generate() from a queue of drafts and records how it was called."""

    def __init__(self, *drafts: GeneratedReport) -> None:
        self.drafts = list(drafts)
        self.calls: list[dict] = []

    def generate(self, image, **options) -> GeneratedReport:
        self.calls.append(options)
        return self.drafts.pop(0)


def test_a_clean_draft_passes_with_one_decoding() -> None:
    engine = StandIn(draft())
    gated = gated_generate(engine, "image")
    assert (gated.outcome, gated.passed, gated.redecoded) == ("passed", True, False)
    assert engine.calls == [{}]


def test_a_broken_draft_is_redecoded_with_more_steps_per_block() -> None:
    broken = draft("FINDINGS: Nodule nodule.\nIMPRESSION: -")
    fixed = draft(decode="multistep", steps=8, threshold=0.85)
    engine = StandIn(broken, fixed)
    gated = gated_generate(engine, "image", DraftGate(steps=8))
    assert engine.calls == [{}, {"decode": "multistep", "steps": 8, "threshold": None}]
    assert gated.report is fixed and gated.report.decode == "multistep"
    assert (gated.outcome, gated.problems, len(gated.first_problems)) == ("redecoded", (), 2)
    assert gated.drafts == (broken, fixed)


def test_a_redecode_that_fails_too_gets_a_last_sequential_decode() -> None:
    broken = draft("FINDINGS: Nodule nodule.\nIMPRESSION: -")
    still = replace(broken, decode="multistep", steps=8, threshold=0.85)
    fixed = draft(decode="multistep", steps=8, threshold=1.0)
    engine = StandIn(broken, still, fixed)
    gated = gated_generate(engine, "image", DraftGate(steps=8))
    assert engine.calls == [
        {},
        {"decode": "multistep", "steps": 8, "threshold": None},
        {"decode": "multistep", "steps": 8, "threshold": 1.0},  # one token per step
    ]
    assert gated.report is fixed and gated.outcome == "redecoded" and gated.drafts == (broken, still, fixed)
    assert len(gated.first_problems) == 2  # why the served draft was re-decoded


def test_a_draft_that_stays_broken_is_held() -> None:
    broken = draft("FINDINGS: Nodule nodule.\nIMPRESSION: -")
    engine = StandIn(
        broken, replace(broken, decode="multistep", steps=8), replace(broken, decode="multistep")
    )
    gated = gated_generate(engine, "image")
    assert len(engine.calls) == 3 and gated.outcome == "held" and not gated.passed
    assert gated.problems == (
        "1 adjacent duplicated word(s): 'nodule nodule'",
        "missing or empty section(s): IMPRESSION",
    )
    assert gate_counts([gated, gated_generate(StandIn(draft()), "x")]) == {
        "passed": 1,
        "redecoded": 0,
        "held": 1,
    }


def test_a_redecode_identical_to_the_served_decoding_is_not_run() -> None:
    broken = draft("FINDINGS: x x.\nIMPRESSION: y.", decode="multistep", steps=4, threshold=0.5)
    engine = StandIn(broken)
    gated = gated_generate(engine, "image", DraftGate(steps=4, threshold=0.5, sequential_fallback=False))
    assert len(engine.calls) == 1 and gated.outcome == "held"
    sequential = replace(broken, threshold=1.0)
    engine = StandIn(sequential)  # served one token per step already: nothing left to try
    gated = gated_generate(engine, "image", DraftGate(redecode="multistep", steps=4, threshold=1.0))
    assert len(engine.calls) == 1 and gated.outcome == "held"


def test_bad_gate_settings_are_user_errors() -> None:
    with pytest.raises(UserError, match=r"confidence floor must be within \[0, 1\], got 1.5"):
        DraftGate(min_mean_confidence=1.5)
    with pytest.raises(UserError, match="re-decode steps must be >= 1, got 0"):
        DraftGate(steps=0)


def test_the_engine_redecodes_a_forced_failure_and_says_so(tiny, monkeypatch) -> None:
    """A confidence floor of 1 fails every draft of the random model: the gate re-decodes it with
    the multi-step decoder, then one token per step, the drafts say so, and it is still held (the
    random model stays unsure). The image is read and run through the vision graph once."""
    image = tiny.images(seed=11)[0]
    vision_runs = []
    run = tiny.engine.vision.run
    monkeypatch.setattr(tiny.engine.vision, "run", lambda *args: vision_runs.append(1) or run(*args))
    gated = gated_generate(tiny.engine, image, DraftGate(min_mean_confidence=1.0, steps=8))
    assert len(vision_runs) == 1
    assert [draft.timings["preprocess"] > 0 for draft in gated.drafts] == [True, False, False]
    fresh = [tiny.engine.generate(image, **options) for options in DraftGate(steps=8).redecodes()]
    assert [draft.token_ids for draft in gated.drafts[1:]] == [draft.token_ids for draft in fresh]
    first, second, third = gated.drafts
    assert first.decode == "onestep" and second.decode == third.decode == "multistep"
    assert second.decoding == "multistep steps=8 tau=0.85"
    assert third.decoding == "multistep steps=8 tau=1.00"
    assert third.forwards >= second.forwards > first.forwards
    assert gated.report is third and gated.outcome == "held"
    assert any(p.startswith("mean token confidence") for p in gated.problems)
