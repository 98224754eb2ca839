"""deploy/compose.yaml and deploy/echo.env.example (issue 15 #10): no secret in the repository, the
database password from a file, every ECHO_* name a real setting, and the production node it starts
refuses an empty allow-list."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from sqlalchemy import make_url

from echo.errors import UserError
from node.config.settings import Settings, load_settings
from node.config.startup import check_allow_list

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("ECHO_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def example_env() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in (DEPLOY / "echo.env.example").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return {name.strip(): value.strip() for name, value in pairs}


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${NAME:-default} and ${NAME}, enough for this file."""
    return re.sub(
        r"\$\{(\w+)(?::-([^}]*))?\}", lambda match: env.get(match[1]) or (match[2] or ""), str(value)
    )


def test_no_password_is_written_in_the_compose_file(compose: dict) -> None:
    postgres = compose["services"]["postgres"]
    assert "POSTGRES_PASSWORD" not in postgres["environment"]
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "postgres_password" in postgres["secrets"]
    echo_env = compose["x-echo"]["environment"]
    assert make_url(echo_env["ECHO_DATABASE_URL"]).password is None
    assert echo_env["ECHO_DATABASE_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    for role in ("node", "worker"):
        assert "postgres_password" in compose["services"][role]["secrets"]
    source = compose["secrets"]["postgres_password"]["file"]
    assert not source.startswith((".", "/work")) and "deploy" not in source, (
        "the secret lives outside the repository"
    )
    assert "change-me" not in (DEPLOY / "compose.yaml").read_text().lower()


def test_every_echo_name_is_a_setting(compose: dict) -> None:
    names = set(compose["x-echo"]["environment"]) | {
        name for name in example_env() if name != "ECHO_POSTGRES_PASSWORD_FILE"
    }
    text = (DEPLOY / "echo.env.example").read_text()
    names |= set(re.findall(r"^# (ECHO_\w+)=", text, re.MULTILINE)) - {"ECHO_POSTGRES_PASSWORD_FILE"}
    unknown = sorted(
        name for name in names if name.removeprefix("ECHO_").lower() not in Settings.model_fields
    )
    assert unknown == []


def test_the_compose_node_names_its_callers_or_does_not_start(
    compose: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "postgres_password"
    secret.write_text("from-a-file\n")
    for env in (example_env(), {**example_env(), "ECHO_ALLOWED_CALLERS": ""}):
        for name, value in compose["x-echo"]["environment"].items():
            monkeypatch.setenv(name, interpolate(value, env))
        monkeypatch.setenv("ECHO_DATABASE_PASSWORD_FILE", str(secret))
        monkeypatch.setenv("ECHO_DATA_DIR", str(tmp_path))
        settings = load_settings()
        assert settings.production_reason is not None
        assert settings.model_dir is None, "an empty ECHO_MODEL_DIR is the bundled model, not '.'"
        assert make_url(settings.effective_database_url).password == "from-a-file"
        if env["ECHO_ALLOWED_CALLERS"]:
            check_allow_list(settings)
        else:
            with pytest.raises(
                UserError, match="ECHO_ALLOWED_CALLERS is empty and this is a production node"
            ):
                check_allow_list(settings)


def _toml_blocks(markdown: str) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", markdown, re.S)


def test_the_example_settings_files_use_only_real_settings_and_no_password() -> None:
    import tomllib

    guide = (DEPLOY.parent / "docs" / "site-example.md").read_text()
    examples = [(DEPLOY / "echo.toml").read_text(), *_toml_blocks(guide)]
    assert len(examples) >= 2, "the site guide shows its echo.toml"
    for text in examples:
        values = tomllib.loads(text)
        assert set(values) <= set(Settings.model_fields), set(values) - set(Settings.model_fields)
        if "database_url" in values:
            assert make_url(values["database_url"]).password is None, "a password written in an example"
