import pytest

from echo.errors import UserError
from echo.metrics.jsonl import read_jsonl


def test_rows_and_blank_lines(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": "a"}\n\n  \n{"id": "b", "n": 2}\n')
    assert read_jsonl(path) == [{"id": "a"}, {"id": "b", "n": 2}]
    path.write_text("")
    assert read_jsonl(path) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"id": "a"}\n{"id": \n', r"manifest .*rows.jsonl line 2 is not JSON: Expecting value"),
        (b'{"id": "a"}\n"text"\n', r"line 2 is not a JSON object"),
        (b'{"id": "\xff"}\n', r"is not UTF-8 text"),
    ],
)
def test_defects_name_the_line(tmp_path, content, message):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        read_jsonl(path, "manifest")


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"predictions .*absent.jsonl does not exist or is not a file"):
        read_jsonl(tmp_path / "absent.jsonl", "predictions")
