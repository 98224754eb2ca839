"""The wheel is what a Docker image or a site install gets: it must carry every bundled file.

Built from a copy of the source (so the build's own `build/` and `*.egg-info` stay out of the
checkout) with the setuptools already in .venv (`--no-build-isolation`: offline, seconds). Then
installed, without dependencies, into a fresh venv that borrows .venv's dependencies (but not its
editable install of this project), where it loads the bundled model and drafts the demo study.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
SOURCES = ("echo", "node", "worker", "exporters", "migrations", "pyproject.toml", "README.md")
MUST_SHIP = (
    REPOSITORY / "echo" / "assets" / "models" / "student-onnx",
    REPOSITORY / "echo" / "assets" / "demo",
)


def _run(*args: str | Path, cwd: Path, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(arg) for arg in args], cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCES:
        path = REPOSITORY / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    out = tmp_path_factory.mktemp("wheel")
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        out,
        source,
        cwd=source,
    )
    [built] = out.glob("echo_node-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_carries_the_bundled_model_and_demo_study(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(name for name in names if name.endswith(".dist-info/METADATA"))
        headers = archive.read(metadata).decode()
    expected = {
        path.relative_to(REPOSITORY).as_posix()
        for folder in MUST_SHIP
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert "echo/assets/models/student-onnx/embeddings.npy" in expected
    assert sorted(expected - names) == []
    assert "migrations/script.py.mako" in names
    assert "License-Expression: Apache-2.0" in headers


@pytest.mark.slow
def test_the_installed_wheel_drafts_the_demo_study(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
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
        cwd=tmp_path,
    )
    target = Path(
        _run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path
        ).stdout.strip()
    )
    # .venv's dependencies, read as a plain path entry: its .pth files (the editable install of this
    # checkout among them) are not processed, so `echo` and `node` can only come from the wheel.
    (target / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
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
    result = _run(python, "-I", "-c", script, cwd=tmp_path)
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("node", "echo", "model"):
        assert answer[key].startswith(str(target)), f"{key} came from {answer[key]}, not the wheel"
    assert answer["tokens"] > 0 and answer["text"].strip()
