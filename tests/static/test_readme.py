"""The README stays short and its pictures are there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
PNG = b"\x89PNG\r\n\x1a\n"


def test_every_picture_the_readme_shows_is_a_png_in_the_repository() -> None:
    pictures = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", README)
    local = [path for path in pictures if not path.startswith("http")]
    assert local == ["docs/img/slack-thread.png", "docs/img/slack-oncall.png"]
    for path in local:
        assert (ROOT / path).read_bytes()[:8] == PNG, path


def test_the_readme_stays_under_300_lines() -> None:
    assert 100 < len(README.splitlines()) < 300
