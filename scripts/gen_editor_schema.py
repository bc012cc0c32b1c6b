"""Generate the editor schema (civflow/scaffold/_generated/editor.schema.json).

Built from schemas/pipeline.schema.json and the step catalog by
`civflow.scaffold.editor.build_editor_schema`; committed so the wheel ships it and
`civflow schema` / `civflow init` need no generation step. `--check` exits 1 when the
committed file is not what the current schema and catalog make (a test runs it).

    python scripts/gen_editor_schema.py            # regenerate
    python scripts/gen_editor_schema.py --check    # exit 1 when the committed file is stale
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from civflow.scaffold.editor import GENERATED, build_editor_schema, dumps  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the committed file differs from a fresh generation")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    text = dumps(build_editor_schema())
    elapsed = time.perf_counter() - started
    if args.check:
        current = GENERATED.read_text(encoding="utf-8") if GENERATED.is_file() else ""
        if current != text:
            print(f"gen_editor_schema: {GENERATED} is stale; run scripts/gen_editor_schema.py",
                  file=sys.stderr)
            return 1
        print(f"gen_editor_schema: {GENERATED.name} is current ({elapsed:.2f}s)")
        return 0
    GENERATED.parent.mkdir(parents=True, exist_ok=True)
    tmp = GENERATED.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(GENERATED)
    print(f"gen_editor_schema: wrote {GENERATED} ({len(text.encode()):,} bytes, {elapsed:.2f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
