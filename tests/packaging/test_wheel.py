"""The wheel is what a Docker image or a site install gets: it must carry every file the packages
hold, and work where nothing but the wheel (and its dependencies) is installed.

Built by `scripts/build-wheel.sh`, the script operators and the images use: offline, from a clean
copy of the files git tracks or would track, with the setuptools already in .venv (seconds). Then installed, without
dependencies, into a fresh venv that borrows .venv's dependencies (but not its editable install of
this project): there the console scripts answer --help, the migrations build a database, and the
bundled model drafts the demo study.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
PACKAGES = ("echo", "node", "worker", "exporters", "migrations")
COMMANDS = ("echo-node", "echo-worker", "echo-admin")


def _run(
    *args: str | Path, cwd: Path, timeout_s: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        env=env,
    )
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = _run(
        "bash",
        REPOSITORY / "scripts" / "build-wheel.sh",
        out,
        cwd=REPOSITORY,
        env={**os.environ, "PYTHON": sys.executable},
    )
    built = Path(result.stdout.strip().splitlines()[-1])
    assert built.parent == out and built.name.startswith("echo_node-") and built.suffix == ".whl"
    assert sorted(out.iterdir()) == [built]
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the venv's bin folder, its site-packages) with only the wheel installed in it."""
    venv = tmp_path_factory.mktemp("venv")
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv)
    python = venv / "bin" / "python"
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        wheel,
        cwd=venv,
    )
    target = Path(
        _run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=venv
        ).stdout.strip()
    )
    # .venv's dependencies, read as a plain path entry: its .pth files (the editable install of this
    # checkout among them) are not processed, so `echo` and `node` can only come from the wheel.
    (target / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin", target


def _clean_env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith(("ECHO_", "PYTHON"))}


@pytest.mark.slow
def test_the_wheel_carries_every_file_the_packages_hold_and_nothing_else(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(name for name in names if name.endswith(".dist-info/METADATA"))
        headers = archive.read(metadata).decode()
        entry_points = archive.read(metadata.replace("METADATA", "entry_points.txt")).decode()
    listed = _run(
        "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", *PACKAGES, cwd=REPOSITORY
    ).stdout.split("\0")
    expected = {name for name in listed if name and (REPOSITORY / name).is_file()}  # tracked or not ignored
    # the bundled model and demo study, the migrations and Alembic's template for them among them
    for must in (
        "echo/assets/models/student-onnx/manifest.json",
        "echo/assets/models/student-onnx/embeddings.npy",
        "echo/assets/demo/chest-pa.dcm",
        "migrations/env.py",
        "migrations/script.py.mako",
        "migrations/versions/0001_initial_schema.py",
    ):
        assert must in expected, f"{must} is gone: update this test"
    assert sorted(expected - names) == [], (
        "tracked files missing from the wheel: add their pattern to package-data"
    )
    packaged = {name for name in names if not name.startswith("echo_node-")}
    assert sorted(packaged - expected) == [], "the wheel holds files git ignores"
    assert "License-Expression: Apache-2.0" in headers
    for command in (*COMMANDS, "echo-train"):
        assert f"{command} = " in entry_points


@pytest.mark.slow
def test_the_installed_commands_answer_help(installed: tuple[Path, Path], tmp_path: Path) -> None:
    bin_dir, _ = installed
    for command in COMMANDS:
        result = _run(bin_dir / command, "--help", cwd=tmp_path, env=_clean_env(), timeout_s=60)
        assert "Usage:" in result.stdout and command in result.stdout


@pytest.mark.slow
def test_the_installed_migrations_build_a_database(installed: tuple[Path, Path], tmp_path: Path) -> None:
    bin_dir, target = installed
    script = (
        "import json, sqlalchemy\n"
        "import node.store.database as database\n"
        "from node.config.settings import load_settings\n"
        f"db = database.open_database(load_settings(data_dir={str(tmp_path / 'data')!r}))\n"
        "database.migrate(db.engine)\n"
        "with db.engine.connect() as c:\n"
        "    head = c.execute(sqlalchemy.text('select version_num from alembic_version')).scalar_one()\n"
        "print(json.dumps({'migrations': str(database.MIGRATIONS_DIR), 'head': head}))\n"
    )
    result = _run(bin_dir / "python", "-I", "-c", script, cwd=tmp_path)
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["migrations"].startswith(str(target)), f"migrations came from {answer['migrations']}"
    newest = max(path.name for path in (REPOSITORY / "migrations" / "versions").glob("[0-9]*.py"))
    assert newest.startswith(answer["head"]), (
        f"the database is at {answer['head']}, the newest file is {newest}"
    )


@pytest.mark.slow
def test_the_installed_wheel_drafts_the_demo_study(installed: tuple[Path, Path], tmp_path: Path) -> None:
    bin_dir, target = installed
    script = (
        "import json, node, echo\n"
        "from echo.runtime.engine import Engine\n"
        "from node.config.settings import bundled_model_dir\n"
        "from node.ops.demo import DEMO_STUDY\n"
        "engine = Engine.load(bundled_model_dir(), providers='cpu', threads=1, warm_up=False)\n"
        "report = engine.generate(DEMO_STUDY)\n"
        "print(json.dumps({'node': node.__file__, 'echo': echo.__file__, 'model': str(bundled_model_dir()),\n"
        "                  'text': report.text, 'tokens': report.tokens}))\n"
    )
    result = _run(bin_dir / "python", "-I", "-c", script, cwd=tmp_path)
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("node", "echo", "model"):
        assert answer[key].startswith(str(target)), f"{key} came from {answer[key]}, not the wheel"
    assert answer["tokens"] > 0 and answer["text"].strip()
