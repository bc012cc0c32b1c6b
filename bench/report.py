"""Report bench: `civflow report` over 1,000 and 5,000 instances, first call and second call.

A synthetic project per size: a LoRA × seed matrix pipeline whose lockfile records one
picture per instance, each a distinct seeded JPEG (512 × 768, drawn with Pillow) in the
local store and in out/, with the fingerprints the plan computes, so every instance
plans as cached and the report shows its picture. Measured side by side, per size:

- baseline: a plain Pillow loop making the same 256 px WebP thumbnails (the encoding
  any report must do once), no HTML, no copying;
- first `write_report` call: plan, copy originals into the report, encode thumbnails,
  write the pages; its time as a ratio to the baseline;
- second call on the same folder: nothing is copied or encoded (the counts say so), only
  planning and HTML; its time as a ratio to the first; "plan only" is the planning alone
  (`civflow.review.diff.compare`), which every call pays, and "2nd-plan" what is left
  for the report itself (checking files by size, writing HTML);
- page weight: HTML bytes (all pages, and the largest page), thumbnails, originals.

Run: .venv/bin/python bench/report.py [--sizes 1000,5000] [--page-size 500]
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

import civflow
from civflow.review.report import write_report
from civflow.review.report.compare import review_views
from civflow.store.lockfile import Artifact, LockedInstance, Lockfile
from civflow.store.objects import ObjectStore

SEED = 20241125
WIDTH, HEIGHT = 512, 768


def pipeline(loras: int, seeds: int) -> str:
    names = ", ".join(f"l{i:03d}" for i in range(loras))
    numbers = ", ".join(str(s) for s in range(1, seeds + 1))
    return f"""\
version: 1
name: bench
vars:
  subject: a lighthouse on a cliff at dusk
defaults:
  imageGen:
    engine: sdcpp
    ecosystem: sdxl
    operation: createImage
    model: urn:air:sdxl:checkpoint:civitai:101055@128078
    width: {WIDTH}
    height: {HEIGHT}
    steps: 20
steps:
  sweep:
    type: imageGen
    matrix:
      lora: [{names}]
      seed: [{numbers}]
    input:
      prompt: "{{{{ subject }}}}, style {{{{ matrix.lora }}}}"
      negativePrompt: blurry, lowres
      seed: "{{{{ matrix.seed }}}}"
      loras:
        "urn:air:sdxl:lora:civitai:123456@789012": 0.8
"""


def picture(rng: random.Random) -> bytes:
    image = Image.new("RGB", (WIDTH, HEIGHT), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x, y = rng.randrange(WIDTH), rng.randrange(HEIGHT)
        r = rng.randrange(20, 160)
        draw.ellipse((x - r, y - r, x + r, y + r),
                     fill=tuple(rng.randrange(256) for _ in range(3)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def make_project(root: Path, count: int) -> tuple[Path, list[bytes]]:
    """A project whose lockfile holds `count` cached instances; the pictures' bytes."""
    loras = max(1, count // 50)
    seeds = count // loras
    (root / ".civflow").mkdir(parents=True)
    (root / "pipelines").mkdir()
    file = root / "pipelines" / "bench.yaml"
    file.write_text(pipeline(loras, seeds), encoding="utf-8")
    planned = civflow.plan(civflow.load(file))
    store = ObjectStore(root / ".civflow" / "objects")
    rng = random.Random(SEED)
    entries: dict[str, LockedInstance] = {}
    pictures = []
    tmp = root / ".civflow" / "objects" / "tmp"
    tmp.mkdir(parents=True)
    for item in planned.instances:
        inst = item.instance
        data = picture(rng)
        pictures.append(data)
        rel = f"../out/bench/{inst.name}/0.jpeg"
        out_file = file.parent / rel
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_bytes(data)
        staged = tmp / "part"
        staged.write_bytes(data)
        import hashlib

        sha = hashlib.sha256(data).hexdigest()
        store.adopt(staged, sha)
        assert inst.fingerprint is not None
        entries[inst.name] = LockedInstance(
            instance=inst.name, step=inst.step, type=inst.type, fingerprint=inst.fingerprint,
            request=inst.request, seed=inst.seed, workflow_id=f"wf-{len(entries)}",
            cost=10.0, completed_at="2024-11-25T00:00:00Z", output={"images": [{}]},
            artifacts=(Artifact(f"blob-{len(entries)}.jpeg", sha, len(data), "image/jpeg",
                                WIDTH, HEIGHT, rel),))
    Lockfile("bench", entries).save(file.with_name("bench.lock.json"))
    return file, pictures


def baseline(pictures: list[bytes]) -> float:
    start = time.perf_counter()
    for data in pictures:
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (256, 256))
        image.thumbnail((256, 256))
        image.save(io.BytesIO(), format="WEBP", quality=72, method=1)
    return time.perf_counter() - start


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir()) if folder.is_dir() else 0


def measure(count: int, page_size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="civflow-report-bench-") as tmp:
        root = Path(tmp)
        file, pictures = make_project(root, count)
        plain = baseline(pictures)
        out = root / "review"
        start = time.perf_counter()
        first = write_report([file], out=out, page_size=page_size, cwd=root)
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        second = write_report([file], out=out, page_size=page_size, cwd=root)
        second_s = time.perf_counter() - start
        start = time.perf_counter()  # warm, as in the second call
        review_views([file], None, root)
        plan_s = time.perf_counter() - start
        assert first.counts.encoded == count and first.counts.unavailable == 0, first.counts
        assert second.counts.encoded == 0 and second.counts.copied == 0, second.counts
        largest = max(p.stat().st_size for p in second.pages)
        return {
            "instances": count, "baseline_s": plain, "plan_s": plan_s, "first_s": first_s,
            "second_s": second_s, "encoded_2nd": second.counts.encoded,
            "pages": len(second.pages), "html": second.html_bytes, "largest_page": largest,
            "thumbs": folder_bytes(out / "thumbs"), "originals": folder_bytes(out / "files"),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,5000")
    parser.add_argument("--page-size", type=int, default=500)
    args = parser.parse_args(argv)
    rows = [measure(int(n), args.page_size) for n in args.sizes.split(",")]
    mb = 1024 * 1024
    print(f"{'instances':>9} {'pillow loop':>11} {'plan only':>9} {'1st call':>9} "
          f"{'1st/loop':>8} {'2nd call':>9} {'2nd/1st':>7} {'2nd-plan':>8} {'re-enc':>6} "
          f"{'pages':>5} {'HTML':>8} "
          f"{'max page':>8} {'thumbs':>8} {'originals':>9}")
    for r in rows:
        print(f"{r['instances']:>9,.0f} {r['baseline_s']:>10.2f}s {r['plan_s']:>8.2f}s "
              f"{r['first_s']:>8.2f}s "
              f"{r['first_s'] / r['baseline_s']:>8.2f} {r['second_s']:>8.2f}s "
              f"{r['second_s'] / r['first_s']:>7.2f} {r['second_s'] - r['plan_s']:>7.2f}s "
              f"{r['encoded_2nd']:>6.0f} "
              f"{r['pages']:>5.0f} {r['html'] / mb:>6.1f}MB {r['largest_page'] / 1024:>6.0f}KB "
              f"{r['thumbs'] / mb:>6.1f}MB {r['originals'] / mb:>7.1f}MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
