"""Make the README's pictures again: `.venv/bin/python -m docs.screenshots.make`.

Plays a short day through a real `smsbridge serve` against the fakes (`day.py`), renders what
the fake Slack received as the Slack desktop client would show it (`slack_page.py`), and
takes each picture with headless Chromium into `docs/img/`. Needs `/usr/bin/chromium` (Debian:
`apt-get install chromium`; fonts-lato and fonts-noto-color-emoji make it look like Slack).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

from docs.screenshots.day import ONCALL, SUPPORT, Recorded, play
from docs.screenshots.slack_page import page

IMAGES = Path(__file__).resolve().parents[1] / "img"
WIDTH = 1100  # GitHub shows a README picture about 880 pixels wide
SCALE = 2  # pixels per CSS pixel: sharp when GitHub scales the picture down
CHROMIUM = [
    "/usr/bin/chromium",
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    f"--force-device-scale-factor={SCALE}",
]


def _threads(recorded: Recorded) -> dict[str, tuple[str, str]]:
    """Picture name → (channel, the ts of the thread shown open): the first customer's thread
    in support, the alert that was answered in its thread on call."""
    support = [p for p in recorded.posts if p.channel == SUPPORT and p.thread_ts is None]
    answered = {p.thread_ts for p in recorded.posts if p.channel == ONCALL and p.thread_ts}
    (alert,) = [p for p in recorded.posts if p.channel == ONCALL and p.ts in answered]
    return {"slack-thread": (SUPPORT, support[0].ts), "slack-oncall": (ONCALL, alert.ts)}


def _chromium(profile: Path, height: int, *args: str) -> str:
    command = [
        *CHROMIUM,
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{height}",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def screenshot(html_file: Path, png: Path, profile: Path) -> None:
    """Render once to learn the page's height (its script puts it in the title), then take
    the picture in a window that tall."""
    dom = _chromium(profile, 400, "--dump-dom", html_file.as_uri())
    found = re.search(r"<title>(\d+)</title>", dom)
    if found is None:
        raise RuntimeError(f"{html_file}: the page did not report its height")
    _chromium(profile, int(found.group(1)), f"--screenshot={png}", html_file.as_uri())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=IMAGES, help="where the PNGs go")
    parser.add_argument("--keep", action="store_true", help="keep the HTML and the bridge's log")
    arguments = parser.parse_args()
    if not Path(CHROMIUM[0]).exists():
        parser.exit(1, f"{CHROMIUM[0]} not found: install it (Debian: apt-get install chromium)\n")
    with tempfile.TemporaryDirectory(prefix="screenshots-") as work:
        workdir = Path(work) if not arguments.keep else Path(tempfile.mkdtemp(prefix="shots-"))
        recorded = play(workdir)
        arguments.out.mkdir(parents=True, exist_ok=True)
        for name, (channel, thread) in _threads(recorded).items():
            html_file = workdir / f"{name}.html"
            html_file.write_text(page(recorded, channel, thread))
            png = arguments.out / f"{name}.png"
            screenshot(html_file, png, Path(work) / "chromium")
            print(f"wrote {png}")
        if arguments.keep:
            print(f"kept {workdir}")


if __name__ == "__main__":
    main()
