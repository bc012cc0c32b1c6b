"""`civflow report`: the page's content, its files, and its guards, on pipelines run for real.

Pipelines run on the embedded emulator in a real git repository; the HTML is read as
text (the browser test, tests/browser/, opens it in chromium).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from civflow.review.report import write_report
from tests.review_report.support import (
    LORAS,
    MODEL,
    SEEDS,
    Repo,
    changed_by_edit,
    changed_looks,
    looks,
    make_repo,
    many_loras,
)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         capsys: pytest.CaptureFixture[str]) -> Repo:
    return make_repo(tmp_path, monkeypatch, capsys)


def _grid(html: str, step: str) -> tuple[list[str], list[str]]:
    """The column and row headings of a step's grid."""
    table = re.search(rf'<table class="grid" data-step="{re.escape(step)}".*?</table>', html)
    assert table is not None, f"no grid for {step}"
    text = table.group(0)
    return (re.findall(r'<th scope="col">(.*?)</th>', text),
            re.findall(r'<th scope="row">(.*?)</th>', text))


def _pairs(html: str, status: str) -> set[str]:
    return set(re.findall(rf'<div class="pair" data-status="{status}" data-instance="([^"]*)"',
                          html))


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_head_report_lays_a_sweep_out_as_a_grid_and_encodes_once(repo: Repo) -> None:
    """Without --base: every instance's picture, the 3 × 4 sweep as a labelled grid;
    originals copied into files/ and thumbnails into thumbs/, named by sha256; a second
    report copies and encodes nothing (the promise: no re-encoding on every call)."""
    repo.write("looks", looks())
    repo.run("looks")
    out = repo.root / "report"
    first = write_report([Path("pipelines/looks.yaml")], out=out)
    assert first.cards == 13
    assert (first.counts.copied, first.counts.encoded, first.counts.reused) == (13, 13, 0)
    html = (out / "index.html").read_text(encoding="utf-8")
    assert _grid(html, "sweep") == (list(LORAS), [str(s) for s in SEEDS])
    assert "sweep: lora across, seed down" in html
    shas = {p.stem for p in (out / "files").iterdir()}
    assert {p.stem for p in (out / "thumbs").iterdir()} == shas
    assert all(re.fullmatch(r"[0-9a-f]{64}", sha) for sha in shas)
    assert html.count('loading="lazy"') == 13
    before = _mtimes(out / "thumbs") | _mtimes(out / "files")

    second = write_report([Path("pipelines/looks.yaml")], out=out)
    assert (second.counts.copied, second.counts.encoded, second.counts.reused) == (0, 0, 13)
    assert _mtimes(out / "thumbs") | _mtimes(out / "files") == before
    assert (out / "index.html").read_text(encoding="utf-8") == html


def test_report_against_base_pairs_exactly_the_changed_instances(repo: Repo) -> None:
    """With --base: one prompt and one LoRA strength changed give before / after pairs
    for exactly those instances, each with its field old → new, and the summary counts."""
    changed_looks(repo)
    done = repo.cli("report", "pipelines", "--base", "main", "--out", "report")
    assert done.code == 0, done.err
    assert done.out.strip() == str(repo.root / "report" / "index.html")
    html = (repo.root / "report" / "index.html").read_text(encoding="utf-8")
    assert _pairs(html, "changed") == changed_by_edit()
    assert _pairs(html, "added") == _pairs(html, "removed") == set()
    assert "<code>loras[…@250000]</code>: <del>0.6</del> → <ins>0.9</ins>" in html
    assert "<del>watercolor</del><ins>oil painting</ins>" in html
    assert '<label><input type="checkbox" data-filter value="changed" checked> changed (5)' \
        in html


def test_untrusted_text_is_escaped(repo: Repo) -> None:
    """Prompts are untrusted: markup in one is shown as text, never run or loaded."""
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)> & \\\"quotes\\\""
    repo.write("looks", looks(prompt=evil))
    repo.run("looks")
    done = repo.cli("report", "pipelines/looks.yaml", "--out", "report")
    assert done.code == 0, done.err
    html = (repo.root / "report" / "index.html").read_text(encoding="utf-8")
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt; &amp;" \
        in html
    assert html.count("<script>") == 1  # the report's own filter script


def test_out_folder_is_guarded(repo: Repo) -> None:
    """The report never goes inside out/ or .civflow/, never writes into a folder that
    holds something else, and updates an earlier report in place."""
    repo.write("looks", looks())
    repo.run("looks")
    for inside in ("out/report", ".civflow/report"):
        done = repo.cli("report", "pipelines", "--out", inside)
        assert done.code == 2
        assert f"--out {inside}: the report may not go inside" in done.err
        assert not (repo.root / inside).exists()
    (repo.root / "notes").mkdir()
    (repo.root / "notes" / "todo.txt").write_text("mine", encoding="utf-8")
    done = repo.cli("report", "pipelines", "--out", "notes")
    assert done.code == 2
    assert "--out notes: the folder exists and does not hold a civflow report" in done.err
    assert sorted(p.name for p in (repo.root / "notes").iterdir()) == ["todo.txt"]
    assert repo.cli("report", "pipelines", "--out", "report").code == 0
    again = repo.cli("report", "pipelines", "--out", "report")
    assert again.code == 0
    assert "0 file(s) copied, 0 thumbnail(s) made, 13 reused" in again.err
    done = repo.cli("report", "nothing-here/*.yaml", "--out", "report")
    assert done.code == 2 and "no pipeline files found" in done.err


def test_grid_axes_can_be_chosen(repo: Repo) -> None:
    """`--grid x=seed,y=lora` turns the grid; an unknown key is a usage error naming
    the keys there are."""
    repo.write("looks", looks())
    repo.run("looks")
    done = repo.cli("report", "pipelines", "--out", "report", "--grid", "x=seed,y=lora")
    assert done.code == 0, done.err
    html = (repo.root / "report" / "index.html").read_text(encoding="utf-8")
    assert _grid(html, "sweep") == ([str(s) for s in SEEDS], list(LORAS))
    done = repo.cli("report", "pipelines", "--out", "report", "--grid", "x=strength")
    assert done.code == 2
    assert "--grid x=strength: no matrix step has the key 'strength'" in done.err
    assert "matrix keys: lora, seed" in done.err
    done = repo.cli("report", "pipelines", "--out", "report", "--grid", "x=seed,x=lora")
    assert done.code == 2 and "expected x=KEY,y=KEY" in done.err


def _store_object(repo: Repo, sha: str) -> Path:
    return repo.root / ".civflow" / "objects" / "sha256" / sha[:2] / sha[2:]


def _base_sha(repo: Repo, instance: str) -> str:
    import json

    lock = json.loads(repo.git("show", "main:pipelines/looks.lock.json"))
    sha: str = lock["instances"][instance]["artifacts"][0]["sha256"]
    return sha


def test_a_missing_or_damaged_base_picture_is_said(repo: Repo) -> None:
    """A base picture that is not in the local store (nor on a remote) is shown as
    unavailable; one whose stored bytes no longer hash to its name is never shown."""
    changed_looks(repo)
    gone, damaged = _base_sha(repo, "cover"), _base_sha(repo, "sweep[lora=clay,seed=11]")
    _store_object(repo, gone).unlink()
    bad = _store_object(repo, damaged)
    os.chmod(bad, stat.S_IWUSR | stat.S_IRUSR)
    bad.write_bytes(b"not the picture")
    done = repo.cli("report", "pipelines", "--base", "main", "--out", "report")
    assert done.code == 0, done.err
    assert "2 unavailable" in done.err
    html = (repo.root / "report" / "index.html").read_text(encoding="utf-8")
    for instance in ("cover", "sweep[lora=clay,seed=11]"):
        pair = re.search(rf'<div class="pair"[^>]* data-instance="{re.escape(instance)}"'
                         r'.*?<div class="side after">', html)
        assert pair is not None
        assert "unavailable: not in the local store or out/" in pair.group(0)
    assert not list((repo.root / "report" / "files").glob(f"{damaged}.*"))


def test_base_pictures_come_from_the_remote(repo: Repo, monkeypatch: pytest.MonkeyPatch,
                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    """In a clone without the base's pictures, they are pulled from the team's remote
    (verified) and shown."""
    remote = tmp_path_factory.mktemp("remote")
    monkeypatch.setenv("CIVFLOW_REMOTE", remote.as_uri())
    repo.write("looks", looks())
    repo.run("looks")
    repo.commit("looks")
    pushed = repo.cli("push", "pipelines")
    assert pushed.code == 0, pushed.err
    repo.git("checkout", "-q", "-b", "change")
    repo.write("looks", looks(cover="oil painting", clay=0.9))
    repo.run("looks")
    sha = _base_sha(repo, "cover")
    _store_object(repo, sha).unlink()
    done = repo.cli("report", "pipelines", "--base", "main", "--out", "report")
    assert done.code == 0, done.err
    assert "0 unavailable" in done.err
    assert (repo.root / "report" / "files" / f"{sha}.jpg").is_file()
    assert _store_object(repo, sha).is_file()


def test_pages_split_a_large_report(repo: Repo) -> None:
    """More cards than a page holds continue on page-2.html, … with links between the
    pages; every instance is on exactly one page; a smaller report removes old pages."""
    repo.write("looks", looks())
    repo.run("looks")
    out = repo.root / "report"
    written = write_report([Path("pipelines/looks.yaml")], out=out, page_size=5)
    names = [p.name for p in written.pages]
    assert names[0] == "index.html" and names[1:] == [f"page-{i}.html"
                                                      for i in range(2, len(names) + 1)]
    assert len(names) >= 3
    seen: list[str] = []
    for page in written.pages:
        html = page.read_text(encoding="utf-8")
        seen += re.findall(r'<figure class="card" data-status="unchanged" '
                           r'data-instance="([^"]*)"', html)
        assert '<nav class="pages">' in html
        assert all(f'href="{other}"' in html for other in names if other != page.name)
    assert sorted(seen) == sorted({*seen}) and len(seen) == 13
    again = write_report([Path("pipelines/looks.yaml")], out=out)
    assert [p.name for p in again.pages] == ["index.html"]
    assert not list(out.glob("page-*.html"))


def test_video_plays_inline_with_a_poster(repo: Repo) -> None:
    """A video is a `<video controls preload=none>` with its first frame as the poster,
    so the page loads no video bytes until asked."""
    repo.write("clip", """\
version: 1
name: clip
steps:
  clip:
    type: videoGen
    input:
      engine: veo3
      prompt: waves on a black sand beach
      generateAudio: false
      aspectRatio: "16:9"
      duration: 4
""")
    repo.run("clip")
    done = repo.cli("report", "pipelines/clip.yaml", "--out", "report")
    assert done.code == 0, done.err
    html = (repo.root / "report" / "index.html").read_text(encoding="utf-8")
    video = re.search(r'<video controls preload="none" poster="(thumbs/[0-9a-f]{64}\.webp)"'
                      r'[^>]* src="(files/[0-9a-f]{64}\.mp4)">', html)
    assert video is not None, html
    assert (repo.root / "report" / video.group(1)).stat().st_size > 0
    assert (repo.root / "report" / video.group(2)).stat().st_size > 0


def test_a_200_instance_sweep_change_shows_exactly_its_pairs(repo: Repo) -> None:
    """The issue's yardstick: one prompt and one LoRA strength changed in a 200-instance
    sweep; the report pairs before / after for exactly the 11 changed instances (the
    cover, and the edited LoRA's 10 seeds) and shows the other 190 in a 20 × 10 grid."""
    airs = many_loras(20)
    seeds = tuple(range(1, 11))
    repo.write("looks", looks(size=256, lora_airs=airs, seeds=seeds))
    repo.run("looks")
    repo.commit("a 200-instance sweep")
    repo.git("checkout", "-q", "-b", "change")
    repo.write("looks", looks(size=256, lora_airs=airs, seeds=seeds, cover="oil painting",
                              clay=0.9))
    repo.run("looks")
    done = repo.cli("report", "pipelines", "--base", "main", "--out", "report")
    assert done.code == 0, done.err
    html = (repo.root / "report" / "index.html").read_text(encoding="utf-8")
    assert _pairs(html, "changed") == {"cover", *(f"sweep[lora=clay,seed={s}]" for s in seeds)}
    assert len(re.findall(r'<div class="side before"><h4>before \(base\)</h4><div class="media">'
                          r'<a href="files/', html)) == 11
    assert _grid(html, "sweep") == (list(airs), [str(s) for s in seeds])
    assert "0 unavailable" in done.err


def test_added_and_removed_instances_are_marked(repo: Repo) -> None:
    """A seed swapped in the sweep: the old seed's instances are marked removed (their
    base pictures shown), the new seed's added (not generated yet, with the estimate);
    the details name the workflow and the run that made each picture."""
    repo.write("looks", looks())
    repo.run("looks")
    repo.commit("looks")
    run_id = next((repo.root / ".civflow" / "runs").iterdir()).name
    repo.git("checkout", "-q", "-b", "change")
    repo.write("looks", looks(seeds=(11, 22, 33, 55)))
    done = repo.cli("report", "pipelines", "--base", "main", "--out", "report")
    assert done.code == 0, done.err
    html = (repo.root / "report" / "index.html").read_text(encoding="utf-8")
    assert _pairs(html, "removed") == {f"sweep[lora={n},seed=44]" for n in LORAS}
    assert _pairs(html, "added") == {f"sweep[lora={n},seed=55]" for n in LORAS}
    assert _pairs(html, "changed") == set()
    assert html.count('<div class="ph">added: no base version</div>') == 3
    assert html.count("not generated yet: <code>civflow run</code> makes it") >= 3
    assert html.count('<div class="ph">removed: the head does not have it</div>') == 3
    assert f"<dt>run</dt><dd>{run_id}</dd>" in html
    assert re.search(r"<dt>workflow</dt><dd>[^<]+</dd>", html)
    assert "<dt>LoRAs</dt><dd>urn:air:sdxl:lora:civitai:123456@789012 @ 0.8</dd>" in html


def test_a_third_matrix_key_gives_one_grid_per_value(repo: Repo) -> None:
    """Past the two keys laid out, each combination of the others is a grid of its
    own, captioned with its values."""
    repo.write("trio", f"""\
version: 1
name: trio
steps:
  shot:
    type: imageGen
    matrix:
      style: [ink, clay]
      seed: [1, 2]
      light: [dawn, noon, dusk]
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: {MODEL}
      width: 256
      height: 256
      steps: 10
      prompt: "a fox, {{{{ matrix.style }}}}, {{{{ matrix.light }}}}"
      seed: "{{{{ matrix.seed }}}}"
""")
    repo.run("trio")
    done = repo.cli("report", "pipelines/trio.yaml", "--out", "report")
    assert done.code == 0, done.err
    html = (repo.root / "report" / "index.html").read_text(encoding="utf-8")
    captions = re.findall(r"<caption>(.*?)</caption>", html)
    assert captions == [f"shot: style across, seed down · light={v}"
                        for v in ("dawn", "noon", "dusk")]
    assert html.count("<td><figure") == 12
