"""`echo-admin retrain`: the stages from a version's checkpoints, resumable, then the export, the
candidate and the gate. The stage logic runs against a stand-in for echo-train (fast); one test runs
the real stages, export and gate on a tiny data set and runs it twice."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import select

from echo.data.synthetic import generate_dataset
from echo.errors import UserError
from echo.findings import FINDINGS
from node.config.settings import Settings, bundled_model_dir
from node.learning.gate import Evaluation, StudyDraft, run_gate
from node.learning.retrain import RetrainOptions, decoder_layers, deeper_student, parse_stages, retrain
from node.ops.admin import main
from node.store.database import Database
from node.store.models import ModelPromotion, ModelVersion
from node.store.states import ModelRole

BUNDLED = bundled_model_dir().parent  # ar/, teacher/, student/ and the export student-onnx/
PARITY_OK = {"passed": True, "detail": "within tolerance"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`echo-train make-synthetic --n 12 --seed 1 --size 256`: 7 train, 2 val, 3 test studies."""
    return generate_dataset(12, 1, tmp_path_factory.mktemp("tiny"), size=256)


class FakeTrain:
    """Stands in for `python -m echo.cli STAGE ...`: writes what the stage writes (out/last, out/best,
    metrics.json at the end), or stops halfway with exit 1 for the stages in `fail`."""

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        self.fail = set(fail)
        self.commands: list[list[str]] = []

    def __call__(self, command: list[str]) -> int:
        self.commands.append(command)
        stage, args = command[3], command[4:]
        option = dict(zip(args[::2], args[1::2], strict=False))
        out = Path(option["--out"])
        if stage == "export":  # the bundled export, as if of dcd/best, with a version of its own
            shutil.copytree(BUNDLED / "student-onnx", out, dirs_exist_ok=True)
            manifest = json.loads((out / "manifest.json").read_text())
            manifest.update(name=option["--name"], version="5175e0000000000a")
            (out / "manifest.json").write_text(json.dumps(manifest))
            return 0
        (out / "last").mkdir(parents=True, exist_ok=True)
        (out / "last" / "trainer.pt").write_bytes(b"step state")
        if stage in self.fail:
            self.fail.discard(stage)
            return 1
        source = {"ar": "ar", "rad": "teacher", "dcd": "student"}[stage]
        shutil.copytree(BUNDLED / source, out / "best", dirs_exist_ok=True)
        (out / "metrics.json").write_text(json.dumps({"stage": stage, "steps": int(option["--steps"])}))
        return 0

    def stages(self) -> list[str]:
        return [command[3] for command in self.commands]

    def option(self, stage: str, name: str) -> str | None:
        [command] = [c for c in self.commands if c[3] == stage]
        return command[command.index(name) + 1] if name in command else None


def evaluation(positives_found: int) -> Evaluation:
    """Six studies with one positive finding each; the model names `positives_found` of them."""
    drafts = []
    for i in range(6):
        truth = {name: "positive" if name == FINDINGS[i] else "negative" for name in FINDINGS}
        said = truth if i < positives_found else dict.fromkeys(FINDINGS, "negative")
        drafts.append(StudyDraft(f"s{i}", said, truth, 64, 8))
    return Evaluation("/m", "v", 8, tuple(drafts))


def fake_gate(candidate_found: int = 5, serving_found: int = 5):
    found = iter((candidate_found, serving_found))
    return partial(run_gate, evaluate=lambda *a, **k: evaluation(next(found)), parity=lambda *_: PARITY_OK)


def options(data: Path, work: Path, from_version: int, **more) -> RetrainOptions:
    return RetrainOptions(
        from_version=str(from_version),
        data=data,
        steps={"ar": 3, "rad": 3, "dcd": 3},
        work=work,
        **more,
    )


def test_an_interrupted_run_resumes_where_it_stopped_and_a_finished_one_does_nothing(
    database: Database, settings: Settings, tiny: Path, tmp_path: Path, bundled_id: int
) -> None:
    work = tmp_path / "work"
    chosen = options(tiny, work, bundled_id, stages=parse_stages("ar,rad,dcd"))
    first = FakeTrain(fail=("rad",))
    with pytest.raises(UserError, match="echo-train rad failed \\(exit 1\\); run the same command again"):
        retrain(database.sessions, settings, chosen, runner=first, say=lambda _: None)
    assert first.stages() == ["ar", "rad"]
    assert first.option("ar", "--init") == str(BUNDLED / "ar")  # fine-tuning the version's AR model

    second, said = FakeTrain(), []
    result = retrain(database.sessions, settings, chosen, runner=second, say=said.append, gate=fake_gate())
    assert second.stages() == ["rad", "dcd", "export"]
    assert second.option("rad", "--out") == str(work / "rad")  # the same out: echo-train resumes from last/
    assert second.option("rad", "--init") == str(work / "ar" / "best")
    assert second.option("dcd", "--teacher") == str(work / "rad" / "best")
    assert second.option("dcd", "--student") is None  # a new teacher: the student is distilled afresh
    assert second.option("dcd", "--student-layers") is None  # at the teacher's depth, as the served one
    assert second.option("export", "--checkpoint") == str(work / "dcd" / "best")
    # the new teacher goes into the export as the draft gate's re-decode model
    assert second.option("export", "--redecode-checkpoint") == str(work / "rad" / "best")
    assert "stage 1/3: ar, 3 steps: finished before, skipped" in said
    assert "stage 2/3: rad, 3 steps: resuming from its last checkpoint -> " + str(work / "rad") in said
    assert result.gate["passed"] and not result.promoted
    with database.sessions() as session:
        row = session.get_one(ModelVersion, result.candidate_id)
        assert (row.role, row.parent_id, row.name) == (ModelRole.CANDIDATE, bundled_id, "student")
        assert row.training["checkpoints"] == {
            "ar": str((work / "ar" / "best").resolve()),
            "teacher": str((work / "rad" / "best").resolve()),
            "student": str((work / "dcd" / "best").resolve()),
        }
        assert set(row.training["seconds"]) == {"ar", "rad", "dcd", "export"}
        assert Path(row.path).parent == (settings.data_dir / "models").resolve()

    third, said = FakeTrain(), []
    again = retrain(database.sessions, settings, chosen, runner=third, say=said.append, gate=fake_gate(0, 5))
    assert third.commands == [] and again.candidate_id == result.candidate_id
    assert again.gate == result.gate and "promotion gate: already run on this data (figures below)" in said


def test_dcd_alone_distils_from_the_versions_teacher_and_promotes_when_asked(
    database: Database, settings: Settings, tiny: Path, tmp_path: Path, bundled_id: int
) -> None:
    train = FakeTrain()
    chosen = options(tiny, tmp_path / "work", bundled_id, promote=True)
    result = retrain(database.sessions, settings, chosen, runner=train, say=lambda _: None, gate=fake_gate())
    assert train.stages() == ["dcd", "export"]
    assert train.option("dcd", "--teacher") == str(BUNDLED / "teacher")
    assert train.option("dcd", "--student") == str(BUNDLED / "student")  # the served student, fine-tuned
    assert train.option("dcd", "--steps") == "3" and train.option("dcd", "--val-every") == "3"
    assert train.option("export", "--redecode-checkpoint") == str(BUNDLED / "teacher")
    assert result.promoted
    with database.sessions() as session:
        row = session.get_one(ModelVersion, result.candidate_id)
        assert row.role == ModelRole.SERVING
        assert row.training["checkpoints"]["teacher"] == str((BUNDLED / "teacher").resolve())
        [promotion] = session.scalars(select(ModelPromotion))
        assert (promotion.previous_id, promotion.reason) == (
            bundled_id,
            f"retrained from version {bundled_id}; gate passed",
        )


def test_a_rejected_candidate_is_not_promoted(
    database: Database, settings: Settings, tiny: Path, tmp_path: Path, bundled_id: int
) -> None:
    chosen = options(tiny, tmp_path / "work", bundled_id, promote=True)
    result = retrain(
        database.sessions, settings, chosen, runner=FakeTrain(), say=lambda _: None, gate=fake_gate(2, 5)
    )
    assert not result.gate["passed"] and not result.promoted
    again = retrain(database.sessions, settings, chosen, runner=FakeTrain(), say=lambda _: None)
    assert again.gate == result.gate and not again.promoted  # the verdict stands; not gated twice
    with database.sessions() as session:
        assert session.get_one(ModelVersion, result.candidate_id).role == ModelRole.REJECTED


def test_a_work_folder_of_another_run_is_refused(
    database: Database, settings: Settings, tiny: Path, tmp_path: Path, bundled_id: int
) -> None:
    work = tmp_path / "work"
    retrain(
        database.sessions,
        settings,
        options(tiny, work, bundled_id),
        runner=FakeTrain(),
        say=lambda _: None,
        gate=fake_gate(),
    )
    changed = RetrainOptions(from_version=str(bundled_id), data=tiny, steps={"dcd": 5}, work=work)
    with pytest.raises(UserError, match="holds a retraining run with other options \\(steps\\)"):
        retrain(database.sessions, settings, changed, runner=FakeTrain(), say=lambda _: None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"from_version": "404"}, "no model version is called '404'"),
        ({"data": Path("/nowhere/manifest.jsonl")}, "--data /nowhere/manifest.jsonl does not exist"),
        ({"split": "holdout"}, "has no studies in the 'holdout' split"),
    ],
)
def test_bad_inputs_are_one_line_before_any_training(
    database: Database, settings: Settings, tiny: Path, tmp_path: Path, bundled_id: int, change, message
) -> None:
    train = FakeTrain()
    values = {"from_version": str(bundled_id), "data": tiny, "work": tmp_path / "work", **change}
    with pytest.raises(UserError, match=message):
        retrain(database.sessions, settings, RetrainOptions(**values), runner=train, say=lambda _: None)
    assert train.commands == []
    with pytest.raises(UserError, match="--stages 'rad': use one of dcd | rad,dcd | ar,rad,dcd"):
        parse_stages("rad")


def test_a_version_without_checkpoints_cannot_be_retrained(
    database: Database, settings: Settings, tiny: Path, tmp_path: Path, bundled_id: int
) -> None:
    with database.sessions.begin() as session:
        session.get_one(ModelVersion, bundled_id).training = {
            "checkpoints": {"student": str(tmp_path / "gone")}
        }
    with pytest.raises(UserError, match=f"version {bundled_id} has no teacher checkpoint to start dcd from"):
        retrain(database.sessions, settings, options(tiny, tmp_path / "work", bundled_id), runner=FakeTrain())


def test_the_options_travel_as_json_to_a_train_worker(tiny: Path, tmp_path: Path) -> None:
    chosen = options(tiny, tmp_path / "work", 3, stages=("rad", "dcd"), margin=0.02)
    assert RetrainOptions.from_json(json.loads(json.dumps(chosen.to_json()))) == chosen


@pytest.mark.slow
def test_echo_admin_retrain_for_real_twice(
    database: Database, settings: Settings, tiny: Path, tmp_path: Path, bundled_id: int, capsys, monkeypatch
) -> None:
    """The real stage (DCD, 2 steps), export, registration and gate on 12 studies; run again, nothing
    is trained or exported twice."""
    monkeypatch.setenv("ECHO_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("COLUMNS", "200")
    args = [
        "echo-admin", "retrain", "--from", str(bundled_id), "--data", str(tiny), "--stages", "dcd",
        "--steps", "2", "--batch-size", "4", "--val-limit", "2", "--select-by", "loss",
        "--rounds", "1", "--collect-per-round", "8", "--split", "all",
    ]  # fmt: skip
    codes = []
    for _ in range(2):
        monkeypatch.setattr("sys.argv", args)
        with pytest.raises(SystemExit) as exited:
            main()
        codes.append(exited.value.code)
    out = capsys.readouterr().out
    assert "stage 1/1: dcd, 2 steps -> " in out and "stage 1/1: dcd, 2 steps: finished before, skipped" in out
    assert "holds the export of" in out and "promotion gate: already run on this data" in out
    with database.sessions() as session:
        [candidate] = session.scalars(select(ModelVersion).where(ModelVersion.parent_id == bundled_id))
        gate, training = candidate.gate, candidate.training
    assert "gate PASSED" in out or "gate REJECTED" in out
    assert codes == ([0, 0] if gate["passed"] else [1, 1])
    assert gate["candidate"]["studies"] == 12 and gate["checks"]["parity"]["passed"]
    work = settings.data_dir / "retrain" / f"v{bundled_id}-dcd"
    assert training["checkpoints"]["student"] == str((work / "dcd" / "best").resolve())
    assert json.loads((work / "dcd" / "metrics.json").read_text())["steps"] == 2


def test_a_deeper_served_student_keeps_its_depth_when_distilled_afresh(tmp_path: Path) -> None:
    def checkpoint(name: str, config: object) -> Path:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config), encoding="utf-8")
        return tmp_path / name

    teacher = checkpoint("teacher", {"text_config": {"num_hidden_layers": 4}})
    deeper = checkpoint("deeper", {"text_config": {"num_hidden_layers": 8}})
    flat = checkpoint("flat", {"num_hidden_layers": 6})  # the older flat layout
    assert deeper_student({"teacher": teacher, "student": deeper}) == ["--student-layers", "8"]
    assert deeper_student({"teacher": teacher, "student": flat}) == ["--student-layers", "6"]
    assert deeper_student({"teacher": teacher, "student": teacher}) == []
    assert deeper_student({"teacher": teacher}) == []
    assert deeper_student({"teacher": teacher, "student": checkpoint("broken", ["no"])}) == []
    assert decoder_layers(tmp_path / "missing") is None
