"""Take a headless-Chromium screenshot of an autotune study in optuna-dashboard.

    .venv/bin/python scripts/dashboard_screenshot.py --storage sqlite:///autotune.db \\
        [--study NAME] [--page ""|trials|trialTable|analytics|note] [--out docs/dashboard.png]

Starts optuna-dashboard on a free loopback port with the study's artifact folder, points
Chromium (Debian package ``chromium``: ``apt-get install chromium``) at the study page, and
stops both. Chromium's virtual time budget lets the page fetch the study and draw its plots
before the shot is taken.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from autotune import AutotuneError, DashboardServer, load_study, study_artifact_dir
from autotune.serving import free_port

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def dashboard_study_id(url: str, study_name: str) -> int:
    """The id optuna-dashboard gives the study (its page's address), from the dashboard's API."""
    with urllib.request.urlopen(f"{url}/api/studies", timeout=30) as response:
        summaries = json.loads(response.read())["study_summaries"]
    for summary in summaries:
        if summary["study_name"] == study_name:
            return int(summary["study_id"])
    raise SystemExit(f"optuna-dashboard does not list study {study_name!r}")


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("no chromium found; install it with `apt-get install chromium`")


def screenshot(
    *,
    storage: str,
    study: str | None,
    page: str,
    out: Path,
    width: int,
    height: int,
    budget_ms: int,
) -> None:
    loaded = load_study(storage, study)
    chromium = find_chromium()
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="autotune-shot-") as tmp,
        DashboardServer(
            storage,
            port=free_port(),
            artifact_dir=study_artifact_dir(loaded),
            log_path=Path(tmp) / "dashboard.log",
        ) as server,
    ):
        study_id = dashboard_study_id(server.url, loaded.study_name)
        url = f"{server.url}/dashboard/studies/{study_id}" + (f"/{page}" if page else "")
        cmd = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={Path(tmp) / 'profile'}",
            f"--screenshot={out.resolve()}",
            f"--window-size={width},{height}",
            f"--virtual-time-budget={budget_ms}",
            url,
        ]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, check=False, cwd=tmp
        )
    if proc.returncode != 0 or not out.is_file():
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"chromium failed ({proc.returncode}): {last[0]}")
    print(f"wrote {out} from {url}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="sqlite:///autotune.db")
    parser.add_argument("--study", default=None)
    parser.add_argument("--page", default="", help="'' (history), trials, trialTable, analytics")
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard.png"))
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--budget-ms", type=int, default=15000)
    args = parser.parse_args(argv)
    try:
        screenshot(
            storage=args.storage,
            study=args.study,
            page=args.page,
            out=args.out,
            width=args.width,
            height=args.height,
            budget_ms=args.budget_ms,
        )
    except AutotuneError as exc:
        print(f"dashboard_screenshot: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
