"""Retention (issue 15 #9): the spool of finished studies is removed after ECHO_RETENTION_DAYS, the
image a report was drafted from is kept for retraining, and every removal is recorded in its row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from node.config.settings import load_settings
from node.ops.admin import main
from node.serve.retention import retention_loops
from node.store.database import Database, migrate, open_database
from node.store.models import Instance, ModelVersion, Report, SignedReport, Study
from node.store.retention import is_purged, purge
from node.store.states import SignedSource, StudyState

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=40)
RECENT = NOW - timedelta(days=5)


class Site:
    """Studies with real spool files, made directly in the database."""

    def __init__(self, database: Database, spool: Path) -> None:
        self.database = database
        self.spool = spool
        self._n = 0
        with database.sessions.begin() as session:
            model = ModelVersion(name="student", version="1", path="/m", sha256="0" * 64, block_size=8)
            session.add(model)
            session.flush()
            self.model_id = model.id

    def study(self, state: StudyState, updated: datetime, images: int = 2, reported: bool = False) -> int:
        with self.database.sessions.begin() as session:
            self._n += 1
            study = Study(
                study_instance_uid=f"1.2.3.{self._n}",
                state=state,
                first_received_at=updated,
                last_received_at=updated,
                created_at=updated,
                updated_at=updated,
            )
            session.add(study)
            session.flush()
            rows = []
            for index in range(images):
                path = self.spool / f"study{self._n}" / "series" / f"{index}.dcm"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"x" * 1000)
                row = Instance(
                    study_id=study.id,
                    sop_instance_uid=f"1.2.3.{self._n}.{index}",
                    series_instance_uid=f"1.2.3.{self._n}.0",
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
                    path=str(path),
                    size=1000,
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    received_at=updated,
                )
                session.add(row)
                rows.append(row)
            session.flush()
            if reported:
                session.add(
                    Report(
                        study_id=study.id,
                        model_version_id=self.model_id,
                        findings="f",
                        impression="i",
                        text="t",
                        tokens=1,
                        forwards=1,
                        seconds=0.1,
                        instance_id=rows[0].id,
                    )
                )
            session.execute(  # the ORM's onupdate would stamp "now"
                Study.__table__.update().where(Study.id == study.id).values(updated_at=updated)
            )
            return study.id

    def paths(self, study_id: int) -> list[str]:
        with self.database.sessions() as session:
            return list(
                session.scalars(
                    select(Instance.path).where(Instance.study_id == study_id).order_by(Instance.id)
                )
            )


@pytest.fixture
def site(sqlite_db: Database, tmp_path: Path) -> Site:
    return Site(sqlite_db, tmp_path / "spool")


def test_old_finished_studies_lose_their_files_but_not_the_image_a_report_was_drafted_from(
    site: Site,
) -> None:
    delivered = site.study(StudyState.DELIVERED, OLD, images=2, reported=True)
    skipped = site.study(StudyState.SKIPPED, OLD, images=1)
    failed = site.study(StudyState.FAILED, OLD, images=1)
    queued = site.study(StudyState.QUEUED, OLD, images=1)
    recent = site.study(StudyState.DELIVERED, RECENT, images=1)
    before = {study: site.paths(study) for study in (delivered, skipped, failed, queued, recent)}

    result = purge(site.database.sessions, timedelta(days=30), now=NOW)

    assert (result.studies, result.files, result.bytes, result.kept_reported) == (3, 3, 3000, 1)
    kept, removed = site.paths(delivered)
    assert kept == before[delivered][0] and Path(kept).is_file()  # what the draft was made from
    assert removed == "purged:2026-06-01T12:00:00Z" and not Path(before[delivered][1]).exists()
    for study in (skipped, failed):
        [path] = site.paths(study)
        assert is_purged(path)
        assert not Path(before[study][0]).exists()
        assert not Path(before[study][0]).parent.parent.exists()  # emptied folders go too
    for study in (queued, recent):  # not finished, or not old enough
        assert site.paths(study) == before[study]
        assert Path(before[study][0]).is_file()


def test_without_keep_reported_the_drafted_from_image_goes_too(site: Site) -> None:
    delivered = site.study(StudyState.DELIVERED, OLD, images=2, reported=True)
    result = purge(site.database.sessions, timedelta(days=30), keep_reported=False, now=NOW)
    assert (result.files, result.kept_reported) == (2, 0)
    assert all(is_purged(path) for path in site.paths(delivered))


def test_every_image_of_a_study_with_a_signed_report_is_kept_for_retraining(site: Site) -> None:
    signed = site.study(StudyState.SKIPPED, OLD, images=2)  # e.g. imported from an archive
    unsigned = site.study(StudyState.SKIPPED, OLD, images=1)
    with site.database.sessions.begin() as session:
        session.add(
            SignedReport(
                source=SignedSource.IMPORT,
                message_key="import|A1|0",
                message_type="import",
                study_id=signed,
                accession_number="A1",
                result_status="F",
                findings="f",
                impression="i",
                text="t",
            )
        )

    result = purge(site.database.sessions, timedelta(days=30), now=NOW)

    assert (result.files, result.kept_signed) == (1, 2)
    assert result.summary().endswith("; kept 2 images of signed studies")
    assert all(Path(path).is_file() for path in site.paths(signed))
    assert all(is_purged(path) for path in site.paths(unsigned))
    assert purge(site.database.sessions, timedelta(days=30), keep_reported=False, now=NOW).files == 2


def test_a_dry_run_changes_nothing_and_a_second_purge_finds_nothing(site: Site) -> None:
    study = site.study(StudyState.SKIPPED, OLD, images=2)
    before = site.paths(study)
    dry = purge(site.database.sessions, timedelta(days=30), now=NOW, dry_run=True)
    assert (dry.studies, dry.files, dry.dry_run) == (1, 2, True)
    assert dry.summary().startswith("would remove 2 files (0.0 MB) of 1 finished study")
    assert site.paths(study) == before and all(Path(path).is_file() for path in before)

    Path(before[0]).unlink()  # gone already (an operator, a disk error)
    done = purge(site.database.sessions, timedelta(days=30), now=NOW)
    assert (done.files, done.missing) == (1, 1)
    assert all(is_purged(path) for path in site.paths(study))
    again = purge(site.database.sessions, timedelta(days=30), now=NOW)
    assert (again.studies, again.files, again.missing) == (0, 0, 0)


def test_the_node_runs_retention_only_when_it_is_set(site: Site, tmp_path: Path) -> None:
    assert retention_loops(load_settings(data_dir=tmp_path / "d"), site.database.sessions) == []
    study = site.study(StudyState.DELIVERED, datetime.now(UTC) - timedelta(days=10), images=1)
    [loop] = retention_loops(load_settings(data_dir=tmp_path / "d", retention_days=7), site.database.sessions)
    assert loop.name == "retention"
    loop.tick()
    assert all(is_purged(path) for path in site.paths(study))


# --- echo-admin purge ----------------------------------------------------------------------------


@pytest.fixture
def node_data(tmp_path: Path) -> SimpleNamespace:
    data_dir = tmp_path / "data"
    database = open_database(load_settings(data_dir=data_dir))
    migrate(database.engine)
    site = Site(database, data_dir / "spool")
    study = site.study(StudyState.DELIVERED, datetime.now(UTC) - timedelta(days=40), images=2, reported=True)
    yield SimpleNamespace(data_dir=data_dir, site=site, study=study)
    database.dispose()


def run_admin(args: list[str], capsys, monkeypatch: pytest.MonkeyPatch, **env: str) -> tuple[int, str, str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr("sys.argv", ["echo-admin", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


def test_echo_admin_purge_says_what_it_removes(
    node_data: SimpleNamespace, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = str(node_data.data_dir)
    code, out, err = run_admin(
        ["purge", "--older-than", "30", "--dry-run"], capsys, monkeypatch, ECHO_DATA_DIR=data
    )
    assert (code, err) == (0, "")
    assert out.strip() == (
        "would remove 1 file (0.0 MB) of 1 finished study; kept 1 drafted-from image (older than 30 days)"
    )
    assert not any(is_purged(path) for path in node_data.site.paths(node_data.study))

    code, out, _ = run_admin(["purge"], capsys, monkeypatch, ECHO_DATA_DIR=data, ECHO_RETENTION_DAYS="30")
    assert code == 0 and out.startswith("removed 1 file")
    assert [is_purged(path) for path in node_data.site.paths(node_data.study)] == [False, True]


def test_echo_admin_purge_without_an_age_limit_is_one_line(
    node_data: SimpleNamespace, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ECHO_RETENTION_DAYS", raising=False)
    code, out, err = run_admin(["purge"], capsys, monkeypatch, ECHO_DATA_DIR=str(node_data.data_dir))
    assert code == 2
    assert err.strip() == (
        "echo-admin: error: no age limit: give --older-than DAYS or set ECHO_RETENTION_DAYS (unset keeps images)"
    )
