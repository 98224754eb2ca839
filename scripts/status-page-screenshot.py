"""Regenerate docs/status-page.png: the status page of a made-up node, as headless Chromium draws it.

    .venv/bin/python scripts/status-page-screenshot.py [--out docs/status-page.png] [--keep-html DIR]

Seeds a fresh SQLite database with a realistic day (`node.observe.sample_node`: a few dozen studies,
failures, the RIS down for the last minutes, signed reports over eight weeks), serves it with the
node's own listener (`ObserveServer` with the /status route) on a free loopback port, and has
Chromium (Debian package `chromium`) take a 1280 x 1600 screenshot, which is then reduced to a
256-colour palette (a few times smaller; the page is flat colours). The clock is fixed and the time
zone is UTC, so the picture changes only when the page does. Exits 1 with a one-line message when
Chromium is missing or draws nothing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image

from node.config.settings import load_settings
from node.observe.http import ObserveServer, Probes, StatusRoute, registry_with
from node.observe.sample_node import seed_sample_node
from node.observe.status_access import StatusAccess
from node.observe.status_page import StatusPage
from node.store.database import migrate, open_database

REPOSITORY = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 12, 2, 16, 40, 12, tzinfo=UTC)
WINDOW = (1280, 1600)
CHROMIUM_TIMEOUT_S = 60


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    raise SystemExit("no chromium on PATH: apt-get install chromium")


def screenshot(url: str, out: Path, work: Path) -> None:
    """Chromium's own screenshot of `url` (no JavaScript on the page, so nothing to wait for)."""
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--force-device-scale-factor=1",
        f"--user-data-dir={work / 'chromium-profile'}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--screenshot={out}",
        url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=False)
    if result.returncode != 0 or not out.is_file():
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"chromium drew no screenshot (exit {result.returncode}): {tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPOSITORY / "docs" / "status-page.png")
    parser.add_argument("--keep-html", type=Path, metavar="DIR", help="also write the page's HTML there")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="echo-status-") as folder:
        work = Path(folder)
        database = open_database(load_settings(data_dir=work / "data"))
        migrate(database.engine)
        with database.sessions.begin() as session:
            seed_sample_node(session, NOW)
        page = StatusPage(database.sessions, "ECHO", clock=lambda: NOW, zone=UTC)
        server = ObserveServer(
            "127.0.0.1", 0, Probes(registry_with(), {}), StatusRoute(page, StatusAccess(None))
        ).start()
        try:
            if args.keep_html is not None:
                args.keep_html.mkdir(parents=True, exist_ok=True)
                (args.keep_html / "status.html").write_text(page.render().html, encoding="utf-8")
            raw = work / "raw.png"
            screenshot(f"http://127.0.0.1:{server.port}/status", raw, work)
        finally:
            server.stop()
            database.dispose()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(raw) as image:
            image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
                args.out, optimize=True
            )
    print(f"{args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    try:
        main()
    except SystemExit as stop:
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
            sys.exit(1)
        raise
