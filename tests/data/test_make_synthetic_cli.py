"""`echo-train make-synthetic` through the real console entry point (exit codes, one-line errors)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from echo.data.manifest import read_manifest
from echo.data.synthetic import generate_study

ENTRY = "from echo.cli import main; main()"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", ENTRY, "make-synthetic", *args], capture_output=True, text=True, timeout=120
    )


def test_writes_studies_and_manifest_with_two_workers(tmp_path: Path) -> None:
    out = tmp_path / "data"
    result = _run("--n", "4", "--seed", "3", "--out", str(out), "--size", "96", "--workers", "2")
    assert result.returncode == 0, result.stderr
    rows = read_manifest(out / "manifest.jsonl")
    assert [row.id for row in rows] == [f"syn3-{i:06d}" for i in range(4)]
    assert all(row.image_path(out).is_file() for row in rows)
    assert "wrote 4 studies" in result.stderr
    # two worker processes write exactly what one process writes
    assert rows == [generate_study(3, index, tmp_path / "in_process", size=96) for index in range(4)]
    for row in rows:
        assert row.image_path(out).read_bytes() == row.image_path(tmp_path / "in_process").read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "0"], "--n must be between 1 and 10000000, got 0"),
        (["--n", "2", "--seed", "-1"], "--seed must be zero or positive, got -1"),
        (["--n", "2", "--size", "20"], "--size must be between 64 and 4096 pixels, got 20"),
        (["--n", "2", "--workers", "0"], "--workers must be between 1 and 256, got 0"),
        (
            ["--n", "2", "--site", "River Side"],
            "--site must be 1-32 characters of lower-case letters, digits and '-', starting with a "
            "letter, got 'River Side'",
        ),
        (
            ["--n", "2", "--site", "riverside", "--seed", str(2**32)],
            f"--seed must be below {2**32} with --site, got {2**32}",
        ),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = _run(*args, "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"echo-train: error: {message}"
    assert not (tmp_path / "out").exists()


def test_refuses_a_folder_that_already_holds_data(tmp_path: Path) -> None:
    (tmp_path / "manifest.jsonl").write_text("precious\n")
    result = _run("--n", "1", "--out", str(tmp_path))
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"echo-train: error: --out {tmp_path} is not empty; choose a new or empty folder"
    )
    assert (tmp_path / "manifest.jsonl").read_text() == "precious\n"
    a_file = tmp_path / "manifest.jsonl"
    result = _run("--n", "1", "--out", str(a_file))
    assert result.stderr.strip() == f"echo-train: error: --out {a_file} exists and is not a folder"


def test_help_lists_the_options() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for option in ("--n", "--seed", "--out", "--size", "--workers", "--site"):
        assert option in result.stdout


def test_site_option_writes_a_site_shifted_set(tmp_path: Path) -> None:
    out = tmp_path / "site"
    result = _run("--n", "3", "--seed", "3", "--out", str(out), "--size", "96", "--site", "lakeside")
    assert result.returncode == 0, result.stderr
    assert "wrote 3 studies of site lakeside" in result.stderr
    rows = read_manifest(out / "manifest.jsonl")
    assert [row.id for row in rows] == [f"lakeside-3-{i:06d}" for i in range(3)]
    assert {row.site for row in rows} == {"lakeside"}
    assert rows == [generate_study(3, i, tmp_path / "in_process", size=96, site="lakeside") for i in range(3)]
