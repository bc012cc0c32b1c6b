"""The generated reference is committed and current, and no relative link is dead.

Links from README.md and the guides to `docs/reference/...` must work on GitHub, where
no docs build runs: the pages are committed, `docs/hooks/reference.py --check` says
whether they are current, and every relative Markdown link is followed here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# [text](target) outside code; images too. Targets with a scheme or only an anchor are
# not files.
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def test_committed_reference_pages_are_current() -> None:
    done = subprocess.run([sys.executable, str(REPO / "docs" / "hooks" / "reference.py"),
                           "--check"], capture_output=True, text=True, timeout=300,
                          check=False, cwd=REPO)
    assert done.returncode == 0, "run: python docs/hooks/reference.py\n" + done.stderr


def _dead_links(page: Path) -> list[str]:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)
    dead = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        if not path:
            continue
        if not (page.parent / path).resolve().exists():
            dead.append(f"{page.relative_to(REPO)}: {target}")
    return dead


def test_no_dead_relative_links_in_the_markdown() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    dead = [d for page in pages for d in _dead_links(page)]
    assert pages[1:], "no docs found"
    assert not dead, "\n".join(dead)
