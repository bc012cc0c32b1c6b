"""Which files are pipelines: one set of rules for the command line, the review and hooks.

Files, folders (searched below, hidden folders skipped, YAML that reads like a
pipeline) and globs; default: the current folder. Used in the working tree; the review
applies `is_pipeline_text` to the base branch's files read through git.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

__all__ = ["is_pipeline_text", "pipeline_files"]


def is_pipeline_text(head: str) -> bool:
    """Whether the start of a YAML file reads like a pipeline (not a vars file)."""
    head = head[:4096]
    return "\nsteps:" in f"\n{head}" or "\nversion: 1" in f"\n{head}"


def pipeline_files(paths: Sequence[Path], cwd: Path | None = None) -> list[Path]:
    """Pipeline files named by `paths` (relative to `cwd`, default the process's folder);
    absolute when `cwd` is given, as given otherwise."""
    found: list[Path] = []
    for given in paths or (Path("."),):
        full = given if cwd is None or given.is_absolute() else cwd / given
        if full.is_dir():
            for p in sorted([*full.rglob("*.yaml"), *full.rglob("*.yml")]):
                if any(part.startswith(".") for part in p.relative_to(full).parts):
                    continue
                with contextlib.suppress(OSError):
                    if is_pipeline_text(p.read_text(encoding="utf-8", errors="replace")[:4096]):
                        found.append(p)
        elif full.exists():
            found.append(full)
        elif not given.is_absolute():
            found += [p for p in sorted((cwd or Path()).glob(str(given))) if p.is_file()]
    return list(dict.fromkeys(found))
