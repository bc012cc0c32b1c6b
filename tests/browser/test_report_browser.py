"""The HTML report in a real headless browser: Debian's chromium driven by Playwright.

Guards the promise of `civflow report --base`: opened from disk (file://, no server),
every picture loads, a 3 × 4 LoRA × seed sweep is a 3 × 4 grid, and the before / after
pairs are exactly the instances the change touched. Screenshots are kept (the path is
printed) so a person can look at the page.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.review_report.support import (
    LORAS,
    SEEDS,
    Repo,
    changed_by_edit,
    changed_looks,
    looks,
    make_repo,
    many_loras,
)

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium_or_skip() -> None:
    missing = [] if Path(CHROMIUM).is_file() else [CHROMIUM]
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package")
    if missing:
        reason = f"{' and '.join(missing)} missing (scripts/test.sh installs both)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@contextlib.contextmanager
def _browser() -> Iterator[Any]:
    """Chromium under Playwright. Started after civflow's own work: Playwright's sync API
    keeps an event loop running in this thread, where `civflow run` could not start one."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         capsys: pytest.CaptureFixture[str]) -> Repo:
    return make_repo(tmp_path, monkeypatch, capsys)


def _open(browser: Any, page_file: Path) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    blocked: list[str] = []
    # Nothing but the report's own files: a CDN, a font or a tracker would show here.
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
        "file://") else (blocked.append(route.request.url), route.abort())[1])
    page.goto(page_file.as_uri())
    # Lazy images load as they scroll into view; ask for all of them to check each one.
    page.evaluate("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
    page.wait_for_function(
        "Array.from(document.images).every(i => i.complete)", timeout=30_000)
    page.blocked = blocked
    return page


def test_report_against_base_in_chromium(repo: Repo, tmp_path: Path) -> None:
    """A change to one prompt and one LoRA strength: the page from disk loads every
    picture, lays the sweep out as 3 × 4, and pairs before / after exactly the changed
    instances, each naming its changed field."""
    _chromium_or_skip()
    changed_looks(repo)
    out = tmp_path / "report"
    done = repo.cli("report", "pipelines", "--base", "main", "--out", str(out))
    assert done.code == 0, done.err
    with _browser() as browser:
        _check_page(browser, out, tmp_path / "screenshots")


def _check_page(browser: Any, out: Path, shots: Path) -> None:
    page = _open(browser, out / "index.html")

    images = page.evaluate(
        "Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
    assert images and all(width > 0 for _, width in images), images
    assert page.blocked == []

    grid = page.locator('table.grid[data-step="sweep"]')
    assert grid.count() == 1
    columns = grid.locator("thead th[scope=col]").all_inner_texts()
    rows = grid.locator("tbody th[scope=row]").all_inner_texts()
    assert columns == list(LORAS)
    assert rows == [str(s) for s in SEEDS]
    assert grid.locator("tbody td img").count() == 12

    pairs = page.locator('.pair[data-status="changed"]')
    names = set(pairs.evaluate_all("els => els.map(e => e.dataset.instance)"))
    assert names == changed_by_edit()
    for name in names:
        pair = page.locator(f'.pair[data-instance="{name}"]')
        assert pair.locator(".before img").count() == 1
        assert pair.locator(".after img").count() == 1
        before = pair.locator(".before img").get_attribute("src")
        assert before != pair.locator(".after img").get_attribute("src")
    clay = page.locator('.pair[data-instance="sweep[lora=clay,seed=11]"] ul.fields')
    assert "0.6" in clay.inner_text() and "0.9" in clay.inner_text()
    assert "oil painting" in page.locator('.pair[data-instance="cover"] ul.fields').inner_text()
    assert page.locator('.pair[data-status="added"], .pair[data-status="removed"]').count() == 0

    shots.mkdir()
    page.screenshot(path=str(shots / "report-top.png"))
    page.screenshot(path=str(shots / "report-full.png"), full_page=True)

    # The filter hides the unchanged cards, keeping the grid's cells in place.
    unchanged = page.locator('table.grid [data-status="unchanged"]').first
    assert unchanged.is_visible()
    page.locator('input[data-filter][value="unchanged"]').uncheck()
    assert not unchanged.is_visible()
    assert page.locator('table.grid [data-status="changed"]').first.is_visible()

    # Details on demand: the prompt of the cover, escaped text, opened by a click.
    cover = page.locator('.pair[data-instance="cover"] .after details')
    cover.locator("summary").click()
    assert "oil painting" in cover.inner_text()
    page.screenshot(path=str(shots / "report-filtered.png"))
    page.close()
    keep = os.environ.get("CIVFLOW_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for shot in shots.iterdir():
            shutil.copy2(shot, Path(keep) / shot.name)
    print(f"screenshots: {shots}")


def _echo(name: str) -> str:
    return (f"version: 1\nname: {name}\nsteps:\n  say:\n    type: echo\n"
            f"    input: {{message: {name}}}\n")


# Every cell of every grid: inside the viewport's width, or inside an element that
# scrolls sideways and has more to show (its scrollbar is the sign there is more).
CELLS_OFF_PAGE = """
() => Array.from(document.querySelectorAll('table.grid td, table.grid th')).filter(cell => {
  const box = cell.getBoundingClientRect();
  if (box.left >= 0 && box.right <= window.innerWidth) return false;
  for (let el = cell.parentElement; el && el !== document.body; el = el.parentElement) {
    const x = getComputedStyle(el).overflowX;
    if ((x === 'auto' || x === 'scroll') && el.scrollWidth > el.clientWidth) return false;
  }
  return true;
}).map(cell => cell.textContent.slice(0, 60))
"""
PAGE_OVERFLOW = ("[document.documentElement.scrollWidth, document.documentElement.clientWidth,"
                 " document.body.scrollWidth]")


def test_changed_pipelines_first_and_a_wide_grid_stays_on_the_page(
        repo: Repo, tmp_path: Path) -> None:
    """Three pipelines in path order unchanged, new, changed: the report shows the
    changed one first, then the new, then the unchanged. Its 6 × 4 sweep fits a 1400 px
    window or scrolls inside a box of its own; the page itself never runs off to the
    right, at 1400 px or in a narrow window."""
    _chromium_or_skip()
    loras = many_loras(6)
    repo.write("a-still", _echo("still"))
    repo.write("c-sweep", looks(lora_airs=loras))
    repo.run("a-still")
    repo.run("c-sweep")
    repo.commit("still and sweep")
    repo.git("checkout", "-q", "-b", "change")
    repo.write("b-new", _echo("fresh"))
    repo.write("c-sweep", looks(lora_airs=loras, cover="oil painting", clay=0.9))
    repo.run("b-new")
    repo.run("c-sweep")
    out = tmp_path / "report"
    done = repo.cli("report", "pipelines", "--base", "main", "--out", str(out))
    assert done.code == 0, done.err
    with _browser() as browser:
        page = _open(browser, out / "index.html")
        sections = page.evaluate("Array.from(document.querySelectorAll('main h2'))"
                                 ".map(h => h.id)")
        assert sections == ["p-looks", "p-fresh", "p-still"]
        summary = page.locator("table.summary td:first-child").all_inner_texts()
        assert summary == ["looks", "fresh", "still"]
        grid = page.locator('table.grid[data-step="sweep"]')
        assert grid.locator("thead th[scope=col]").all_inner_texts() == list(loras)
        assert grid.locator("tbody td img").count() == 24
        for width in (1400, 900):
            page.set_viewport_size({"width": width, "height": 1000})
            assert page.evaluate(CELLS_OFF_PAGE) == [], width
            scroll_width, client_width, body_width = page.evaluate(PAGE_OVERFLOW)
            assert scroll_width <= client_width and body_width <= client_width, width
            page.screenshot(path=str(tmp_path / f"grid-{width}.png"), full_page=True)
        page.close()
    print(f"screenshots: {tmp_path}")


HOSTILE = b"<html><body><script>document.title = 'pwned'; window.pwned = 1;</script></body></html>"


def test_an_active_artifact_is_published_inert(repo: Repo, tmp_path: Path) -> None:
    """Anyone who can push to a team remote chooses an artifact's bytes and recorded
    path: one that ends in .html (or .svg, .js) is published as a download, and opening
    its link runs nothing."""
    import json

    from civflow.store.objects import ObjectStore

    _chromium_or_skip()
    repo.write("looks", looks())
    repo.run("looks")
    planted = tmp_path / "planted.html"
    planted.write_bytes(HOSTILE)
    sha = ObjectStore(repo.root / ".civflow" / "objects").import_file(planted)
    lock_path = repo.root / "pipelines" / "looks.lock.json"
    lock = json.loads(lock_path.read_text(encoding="utf-8"))
    cover = lock["instances"]["cover"]
    for suffix, media_type in (("html", "text/html"), ("svg", "image/svg+xml"),
                               ("js", None)):
        cover["artifacts"].append({
            "blobId": f"planted-{suffix}", "sha256": sha, "size": len(HOSTILE),
            "mediaType": media_type, "width": None, "height": None,
            "path": f"../out/looks/cover/planted.{suffix}"})
    from civflow.store.lockfile import Lockfile

    Lockfile.from_json(json.dumps(lock), lock_path).save(lock_path)
    out = tmp_path / "report"
    done = repo.cli("report", "pipelines", "--out", str(out))
    assert done.code == 0, done.err
    published = {p.suffix for p in (out / "files").iterdir()}
    assert published.isdisjoint({".html", ".svg", ".js", ".htm", ".xml"}), published
    with _browser() as browser:
        page = _open(browser, out / "index.html")
        links = page.evaluate("Array.from(document.querySelectorAll('a[href^=\"files/\"]'))"
                              ".map(a => [a.getAttribute('href'), a.hasAttribute('download')])")
        planted_links = [(h, d) for h, d in links if h == f"files/{sha}.bin"]
        assert planted_links and all(d for _, d in planted_links), links
        assert page.evaluate("window.pwned") is None and page.title() != "pwned"
        with contextlib.suppress(Exception):  # a download, not a page: goto may refuse it
            page.goto((out / planted_links[0][0]).as_uri())
        assert page.evaluate("window.pwned") is None and page.title() != "pwned"
        page.close()
