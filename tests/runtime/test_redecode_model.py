"""The draft gate's re-decode model: an export may carry a second model (the multi-step teacher) in
a subdirectory; the gate re-decodes a failed draft with it first, the draft names it as its author,
and its files are checked like the served model's."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from echo.errors import UserError
from echo.runtime import Engine, load_manifest
from echo.runtime.draft_check import DraftGate, gated_generate
from echo.runtime.graphs import VisionGraph
from echo.runtime.manifest import check_redecode_pair
from echo.runtime.result import GeneratedReport

ASSETS = Path(__file__).resolve().parents[2] / "echo" / "assets"
BUNDLED = ASSETS / "models" / "student-onnx"
DEMO = ASSETS / "demo" / "chest-pa.dcm"
CLEAN = "FINDINGS: The heart is normal in size. Lungs are clear.\nIMPRESSION: No acute disease."
BROKEN = "FINDINGS: Nodule nodule.\nIMPRESSION: -"


def draft(text: str = CLEAN, decode: str = "onestep", **fields) -> GeneratedReport:
    return GeneratedReport(
        findings="", impression="", text=text, tokens=3, token_ids=(), forwards=1, seconds=0.0,
        decode=decode, confidences=(0.95, 0.9, 0.99), **fields,
    )  # fmt: skip


class StandIn:
    """Answers generate() from a queue of drafts; `redecoder` is another StandIn or None."""

    def __init__(self, *drafts: GeneratedReport, name: str = "student", redecoder=None) -> None:
        self.drafts, self.calls, self.redecoder = list(drafts), [], redecoder
        self.manifest = type("Manifest", (), {"name": name})()

    def generate(self, image, **options) -> GeneratedReport:
        self.calls.append(options)
        return self.drafts.pop(0)


def test_a_broken_draft_is_redecoded_by_the_redecode_model_first_and_names_it() -> None:
    teacher = StandIn(draft(decode="multistep", threshold=0.85, model_version="7e11"), name="teacher")
    student = StandIn(draft(BROKEN), redecoder=teacher)
    gated = gated_generate(student, "image")
    assert student.calls == [{}] and teacher.calls == [{}]  # the teacher's own served decoding
    assert gated.outcome == "redecoded" and gated.report.author == "teacher 7e11"
    assert gated.report.decoding == "multistep tau=0.85 by teacher 7e11"


def test_a_teacher_draft_that_fails_is_decoded_again_by_the_teacher_one_token_per_step() -> None:
    teacher = StandIn(
        draft(BROKEN, decode="multistep", threshold=0.85),
        draft(decode="multistep", steps=8, threshold=1.0, model_version="7e11"),
        name="teacher",
    )
    student = StandIn(draft(BROKEN), redecoder=teacher)
    gated = gated_generate(student, "image", DraftGate(steps=8))
    assert teacher.calls == [{}, {"decode": "multistep", "steps": 8, "threshold": 1.0}]
    assert student.calls == [{}] and gated.outcome == "redecoded"
    assert gated.report.decoding == "multistep steps=8 tau=1.00 by teacher 7e11"


def test_after_the_redecode_model_the_student_redecodes_and_a_draft_still_broken_is_held() -> None:
    teacher = StandIn(
        draft(BROKEN, decode="multistep", threshold=0.85),
        draft(BROKEN, decode="multistep", steps=8, threshold=1.0),
        name="teacher",
    )
    student = StandIn(
        draft(BROKEN),
        draft(BROKEN, decode="multistep", steps=8),
        draft(BROKEN, decode="multistep", steps=8, threshold=1.0),
        redecoder=teacher,
    )
    gated = gated_generate(student, "image", DraftGate(steps=8))
    assert len(teacher.calls) == 2
    # the teacher's drafts do not stand for the student's own re-decodes with the same settings
    assert student.calls == [
        {},
        {"decode": "multistep", "steps": 8, "threshold": None},
        {"decode": "multistep", "steps": 8, "threshold": 1.0},
    ]
    assert gated.outcome == "held" and not gated.passed and len(gated.drafts) == 5


def test_the_gate_can_leave_the_redecode_model_out() -> None:
    teacher = StandIn(name="teacher")
    student = StandIn(draft(BROKEN), draft(decode="multistep", steps=8), redecoder=teacher)
    gated = gated_generate(student, "image", DraftGate(steps=8, redecode_model=False))
    assert teacher.calls == [] and gated.outcome == "redecoded" and gated.report.author is None


@pytest.fixture(scope="module")
def bundled() -> Engine:
    return Engine.load(BUNDLED, threads=1)


def test_the_bundled_student_carries_the_teacher_and_the_gate_uses_it(bundled) -> None:
    """A confidence floor of 1 fails every draft: the teacher re-decodes first (the draft it would
    write on its own, named as its author), then one token per step, then the student twice, and
    the study is held."""
    teacher = bundled.redecoder
    assert teacher is not None and teacher.manifest.name == "teacher"
    assert teacher.manifest.generation.decode == "multistep" and bundled.manifest.redecode == "redecode"
    gated = gated_generate(bundled, DEMO, DraftGate(min_mean_confidence=1.0))
    served, by_teacher, teacher_sequential, *by_student = gated.drafts
    assert served.author is None and served.decode == "onestep"
    assert by_teacher.author == teacher_sequential.author == f"teacher {teacher.version}"
    assert by_teacher.decoding == "multistep steps=8 tau=0.85 by teacher " + teacher.version
    assert teacher_sequential.decoding == "multistep steps=8 tau=1.00 by teacher " + teacher.version
    assert by_teacher.token_ids == teacher.generate(DEMO).token_ids
    assert by_teacher.timings["preprocess"] == 0.0  # the image was read once, by the served model
    assert [draft.author for draft in by_student] == [None, None]
    assert gated.outcome == "held" and any("mean token confidence" in p for p in gated.problems)


def test_the_bundled_demo_draft_passes_the_gate(bundled) -> None:
    gated = gated_generate(bundled, DEMO)
    assert gated.passed and "IMPRESSION:" in gated.report.text


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(BUNDLED, target)
    return target


def test_a_changed_redecode_graph_is_refused_at_load(tmp_path) -> None:
    model = _copy(tmp_path)
    with (model / "redecode" / "decoder.onnx").open("ab") as graph:
        graph.write(b"\0")
    with pytest.raises(UserError, match=r"redecode/decoder.onnx: checksum mismatch"):
        Engine.load(model, threads=1, warm_up=False)


def test_a_changed_redecode_manifest_is_refused_by_the_served_manifest(tmp_path) -> None:
    model = _copy(tmp_path)
    path = model / "redecode" / "manifest.json"
    data = json.loads(path.read_text())
    data["generation"]["threshold"] = 0.5
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"redecode/manifest.json: checksum mismatch"):
        load_manifest(model)


def test_a_manifest_naming_a_redecode_model_badly_is_refused() -> None:
    manifest = load_manifest(BUNDLED, verify=False)
    with pytest.raises(UserError, match=r"redecode '\.\./teacher' is not a subdirectory name"):
        replace(manifest, redecode="../teacher").check("m")
    files = {name: sha for name, sha in manifest.files.items() if not name.startswith("redecode/")}
    with pytest.raises(UserError, match=r"files does not list redecode/manifest.json"):
        replace(manifest, files=files).check("m")


def test_a_redecode_model_that_reads_or_writes_differently_is_refused() -> None:
    served = load_manifest(BUNDLED, verify=False)
    teacher = load_manifest(BUNDLED / "redecode", verify=False)
    check_redecode_pair(served, teacher, "t")  # the bundled pair
    other = replace(
        teacher,
        preprocess={**teacher.preprocess, "max_pixels": 1},
        files={**teacher.files, "tokenizer.json": "0" * 64},
    )
    with pytest.raises(UserError, match="preprocessing differs.*tokenizer differs"):
        check_redecode_pair(served, other, "t")


# --- one vision pass per study: the student and its teacher share a byte-identical vision graph -----


@pytest.fixture
def vision_runs(monkeypatch) -> list[object]:
    """Each VisionGraph.run call's graph, in order."""
    runs: list[object] = []
    original = VisionGraph.run

    def counted(graph, *args):
        runs.append(graph)
        return original(graph, *args)

    monkeypatch.setattr(VisionGraph, "run", counted)
    return runs


def test_the_teacher_reuses_the_students_vision_features_when_the_graphs_are_one(
    bundled, vision_runs
) -> None:
    """Every draft fails (floor 1): five decodes of the demo study, one vision pass. The teacher's
    drafts are the ones it writes from the raw image on its own."""
    teacher = bundled.redecoder
    assert teacher.vision is bundled.vision  # one session for the byte-identical graph
    gated = gated_generate(bundled, DEMO, DraftGate(min_mean_confidence=1.0))
    assert len(gated.drafts) == 5 and vision_runs == [bundled.vision]
    assert all(draft.timings["vision"] < 0.003 for draft in gated.drafts[1:])  # no graph run: a lookup
    vision_runs.clear()
    alone = [teacher.generate(DEMO), teacher.generate(DEMO, decode="multistep", steps=8, threshold=1.0)]
    assert len(vision_runs) == 2  # ... from the raw image: its own vision pass each time
    assert [d.token_ids for d in gated.drafts[1:3]] == [d.token_ids for d in alone]


def test_a_teacher_with_another_vision_graph_runs_its_own_once(tmp_path, vision_runs) -> None:
    """Graphs named by other checksums (a teacher whose vision tower was trained on): the teacher
    computes its own features, once for both of its decodes, and never reads the student's."""
    model = _copy(tmp_path)
    path = model / "redecode" / "manifest.json"
    data = json.loads(path.read_text())
    data["files"]["vision.onnx"] = "0" * 64
    path.write_text(json.dumps(data))
    engine = Engine.load(model, threads=1, warm_up=False, verify=False)
    assert engine.redecoder.vision is not engine.vision
    gated = gated_generate(engine, DEMO, DraftGate(min_mean_confidence=1.0))
    assert len(gated.drafts) == 5 and vision_runs == [engine.vision, engine.redecoder.vision]


def test_a_shared_vision_graph_is_opened_and_warmed_once_at_load(monkeypatch, vision_runs) -> None:
    """The bundled pair's byte-identical vision graph: one onnxruntime session for it, and the two
    warm-ups (student, then teacher) run that one session."""
    import echo.runtime.engine as engine_module

    opened: list[str] = []
    original = engine_module.open_session

    def counted(path, *args, **kwargs):
        opened.append(Path(path).name)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(engine_module, "open_session", counted)
    engine = Engine.load(ASSETS / "models" / "student-onnx", threads=1)
    assert opened.count("vision.onnx") == 1 and opened.count("decoder.onnx") == 2
    assert engine.redecoder.vision is engine.vision
    assert vision_runs and all(graph is engine.vision for graph in vision_runs)
