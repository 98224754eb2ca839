import json

import pytest
import typer
from typer.testing import CliRunner

from echo.commands import evaluate as evaluate_command
from echo.errors import UserError, run_cli

REFS = [
    {
        "id": "s1",
        "report": "FINDINGS: Small left pleural effusion.\nIMPRESSION: Effusion.",
        "labels": {"pleural_effusion": "positive"},
    },
    {"id": "s2", "report": "FINDINGS: Lungs are clear.\nIMPRESSION: Normal.", "labels": {}},
]
PREDS = [{"id": "s1", "report": REFS[0]["report"], "tokens": 16, "forwards": 2, "seconds": 0.25}]


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.callback()(lambda: None)
    app.command("evaluate")(evaluate_command.command)
    return app


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def files(tmp_path):
    return _write(tmp_path / "pred.jsonl", PREDS), _write(tmp_path / "manifest.jsonl", REFS)


def test_json_output(files):
    pred, data = files
    result = CliRunner().invoke(
        _app(), ["evaluate", "--pred", pred, "--data", data, "--json", "--no-semscore"]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["missing_predictions"] == 1 and metrics["missing_ids"] == ["s2"]
    assert metrics["positive_f1"]["micro"] == 1.0
    assert metrics["tokens_per_forward"] == 8.0
    assert metrics["semscore_minilm"] is None


def test_table_output_names_every_metric(files):
    pred, data = files
    result = CliRunner().invoke(_app(), ["evaluate", "--pred", pred, "--data", data, "--no-semscore"])
    assert result.exit_code == 0, result.output
    for name in (
        "positive-finding F1, micro", "ROUGE-L", "BLEU-4", "CIDEr-D", "SemScore-MiniLM", "repeated 4-grams",
        "tokens per forward", "tokens per second", "pleural effusion", "1 manifest studies have no prediction (s2)",
        "positive-finding precision, micro", "positive-finding recall, micro",
        "false-positive findings per normal study", "adjacent duplicate words", "reports with both sections",
        "reports with a broken sentence",
        "fluency: AR NLL per token",
    ):  # fmt: skip
        assert name in result.stdout, name


@pytest.mark.parametrize(
    ("pred_rows", "message"),
    [
        ([{"id": "zz", "report": "x"}], "not in the manifest, e.g. 'zz'"),
        (['{"id": "s1", "report": '], "line 1 is not JSON"),
        (["[1]"], "line 1 is not a JSON object"),
    ],
)
def test_bad_predictions_are_one_line_errors(tmp_path, capsys, monkeypatch, pred_rows, message):
    pred = _write(tmp_path / "pred.jsonl", pred_rows)
    data = _write(tmp_path / "manifest.jsonl", REFS)
    monkeypatch.setattr(
        "sys.argv", ["echo-train", "evaluate", "--pred", pred, "--data", data, "--no-semscore"]
    )
    with pytest.raises(SystemExit) as exit_info:
        run_cli(_app(), "echo-train")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("echo-train: error: ") and message in err and len(err.splitlines()) == 1


def test_fluency_model_that_is_not_a_checkpoint_is_an_error(files, tmp_path):
    pred, data = files
    result = CliRunner().invoke(
        _app(),
        ["evaluate", "--pred", pred, "--data", data, "--no-semscore", "--fluency-model", str(tmp_path)],
    )
    assert isinstance(result.exception, UserError)
    assert "is not a checkpoint directory" in str(result.exception)


def test_missing_files_are_errors(tmp_path, files):
    pred, data = files
    for args, message in (
        (["--pred", str(tmp_path / "none.jsonl"), "--data", data], "predictions file"),
        (["--pred", pred, "--data", str(tmp_path)], "manifest"),
    ):
        result = CliRunner().invoke(_app(), ["evaluate", *args, "--no-semscore"])
        assert isinstance(result.exception, UserError)
        assert message in str(result.exception) and "does not exist or is not a file" in str(result.exception)
