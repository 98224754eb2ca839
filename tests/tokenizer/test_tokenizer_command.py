import json

import pytest
import typer
from typer.testing import CliRunner

from echo.commands import tokenizer as tokenizer_command
from echo.errors import UserError, run_cli
from echo.tokenizer import ReportTokenizer

REPORTS = [
    "FINDINGS: No pleural effusion. Heart size is normal.\nIMPRESSION: Normal chest.",
    "FINDINGS: Small left pleural effusion. No pneumothorax.\nIMPRESSION: Left pleural effusion.",
    "FINDINGS: Heart size is enlarged. Mild pulmonary edema.\nIMPRESSION: Cardiomegaly and edema.",
]


def _app() -> typer.Typer:
    """The command mounted as echo.cli mounts it, in a group of its own."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.callback()(lambda: None)
    app.command("tokenizer")(tokenizer_command.command)
    return app


def _manifest(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" if not isinstance(r, str) else r + "\n" for r in rows))
    return path


def test_trains_from_manifest_reports(tmp_path):
    manifest = _manifest(
        tmp_path / "manifest.jsonl", [{"id": str(i), "report": r} for i, r in enumerate(REPORTS * 3)]
    )
    result = CliRunner().invoke(
        _app(), ["tokenizer", "--data", str(manifest), "--out", str(tmp_path / "tok"), "--vocab-size", "300"]
    )
    assert result.exit_code == 0, result.output
    loaded = ReportTokenizer.from_dir(tmp_path / "tok")
    assert loaded.mask_id == 2 and len(loaded) <= 300
    assert loaded.decode(loaded.encode(REPORTS[1])) == REPORTS[1]
    assert "9 reports" in result.output


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"id": "a", "report": REPORTS[0]}, {"id": "b", "findings": "x"}], 'row 2 has no "report" text'),
        ([{"id": "a", "report": "   "}], 'row 1 has no "report" text'),
        ([{"id": "a", "report": REPORTS[0]}, '{"id": "b", "report": '], "line 2 is not JSON"),
        (['["a list", "not a row"]'], "line 1 is not a JSON object"),
        ([], "has no rows"),
    ],
)
def test_bad_manifests_are_one_line_errors(tmp_path, rows, message):
    manifest = _manifest(tmp_path / "manifest.jsonl", rows)
    result = CliRunner().invoke(
        _app(), ["tokenizer", "--data", str(manifest), "--out", str(tmp_path / "tok")]
    )
    assert isinstance(result.exception, UserError)
    assert message in str(result.exception)
    assert not (tmp_path / "tok").exists()


def test_missing_manifest_and_small_vocab_exit_2_with_one_line(tmp_path, capsys, monkeypatch):
    app = _app()
    for args, message in (
        (
            ["--data", str(tmp_path / "absent.jsonl"), "--out", str(tmp_path / "t")],
            "does not exist or is not a file",
        ),
        (
            ["--data", str(tmp_path / "absent.jsonl"), "--out", str(tmp_path / "t"), "--vocab-size", "50"],
            "too small",
        ),
    ):
        monkeypatch.setattr("sys.argv", ["echo-train", "tokenizer", *args])
        with pytest.raises(SystemExit) as exit_info:
            run_cli(app, "echo-train")
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("echo-train: error: ") and message in err
        assert len(err.splitlines()) == 1


def test_out_that_is_a_file_is_an_error(tmp_path):
    manifest = _manifest(tmp_path / "manifest.jsonl", [{"id": "a", "report": REPORTS[0]}])
    (tmp_path / "file").write_text("x")
    result = CliRunner().invoke(
        _app(), ["tokenizer", "--data", str(manifest), "--out", str(tmp_path / "file")]
    )
    assert isinstance(result.exception, UserError)
    assert "exists and is not a directory" in str(result.exception)


def test_only_the_training_split_is_read_unless_all_is_asked(tmp_path):
    held_out = "FINDINGS: Xylophone zebra quokka.\nIMPRESSION: Quokka."
    rows = [{"id": str(i), "report": r, "split": "train"} for i, r in enumerate(REPORTS * 3)]
    rows += [
        {"id": f"t{i}", "report": held_out, "split": split} for i, split in enumerate(["val", "test"] * 5)
    ]
    manifest = _manifest(tmp_path / "manifest.jsonl", rows)
    for split, reports in (("train", 9), ("all", 19)):
        out = tmp_path / split
        result = CliRunner().invoke(
            _app(), ["tokenizer", "--data", str(manifest), "--out", str(out), "--split", split]
        )
        assert result.exit_code == 0, result.output
        assert f"{reports} reports" in result.output
        tokenizer = ReportTokenizer.from_dir(out)
        merged = len(tokenizer.encode(" quokka")) <= 2
        assert merged is (split == "all")  # the held-out reports' words were learnt only when asked
    only_held_out = _manifest(tmp_path / "held.jsonl", rows[9:])
    result = CliRunner().invoke(
        _app(), ["tokenizer", "--data", str(only_held_out), "--out", str(tmp_path / "x")]
    )
    assert isinstance(result.exception, UserError) and "no training rows" in str(result.exception)
