"""MkDocs hook: writes the reference pages from the sources they describe, at build time.

Three kinds of page are generated, and committed under docs/ so that links to them work
on GitHub: `python docs/hooks/reference.py` writes them, `--check` (run by the tests)
fails when one is stale, and the build refuses a stale one:

- `reference/pipeline-keys.md`, from `schemas/pipeline.schema.json`. Every key's
  `description` there is the one source of its words; a key without one fails the build,
  so a new key cannot ship undocumented.
- `reference/steps/index.md` and one `reference/steps/<type>.md` per step type, from the
  catalog data (`civflow.catalog.catalogued_variants`): every type, engine and input
  variant civflow checks, with its fields.
- `reference/exit-codes.md`, from the CLI's exit-code table (`civflow.cli._exit`); a code
  added there without a sentence here fails the build.

The render functions are pure (data in, Markdown out) so tests can call them directly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "schemas" / "pipeline.schema.json"
GENERATED = ("reference/pipeline-keys.md", "reference/steps/", "reference/exit-codes.md")


class UndocumentedKey(ValueError):
    """A schema key, step type or exit code the documentation has no words for."""


# -- pipeline keys ---------------------------------------------------------------------


def anchor(path: str) -> str:
    """The stable anchor of a key path: `steps.<name>.foreach` -> `steps-name-foreach`."""
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        resolved: Mapping[str, Any] = root["$defs"][ref.removeprefix("#/$defs/")]
        return resolved
    return node


def _code(value: Any) -> str:
    return "`" + json.dumps(value, ensure_ascii=False) + "`"


def describe_type(node: Mapping[str, Any]) -> str:
    """A short human type: `string`, `list of string`, `one of low, normal, high`, …"""
    if "const" in node:
        return f"exactly {_code(node['const'])}"
    if "enum" in node:
        values = list(node["enum"])
        shown = ", ".join(_code(v) for v in values[:12])
        return f"one of {shown}" + (f" (and {len(values) - 12} more)" if len(values) > 12 else "")
    if "$ref" in node:
        return str(node["$ref"]).rsplit("/", 1)[-1]
    for combinator in ("anyOf", "oneOf"):
        if combinator in node:
            return " or ".join(describe_type(option) for option in node[combinator])
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    words = []
    for one in kinds:
        if one == "array":
            items = node.get("items")
            words.append(f"list of {describe_type(items)}" if isinstance(items, Mapping)
                         else "list")
        elif one == "object":
            words.append("mapping")
        elif one == "null":
            continue
        else:
            words.append(str(one))
    if not words:
        return "any value" if not kinds else "null"
    return " or ".join(words)


def _constraints(node: Mapping[str, Any]) -> list[str]:
    parts = []
    for key, word in (("minimum", "at least"), ("maximum", "at most"),
                      ("exclusiveMinimum", "more than"), ("exclusiveMaximum", "less than"),
                      ("minLength", "length at least"), ("maxLength", "length at most"),
                      ("minItems", "items at least"), ("maxItems", "items at most"),
                      ("minProperties", "entries at least"), ("multipleOf", "a multiple of")):
        if key in node:
            parts.append(f"{word} {node[key]}")
    if node.get("uniqueItems"):
        parts.append("no duplicates")
    if "pattern" in node:
        parts.append(f"matches `{node['pattern']}`")
    if "default" in node:
        parts.append(f"default {_code(node['default'])}")
    return parts


def _key_section(path: str, node: Mapping[str, Any], required: bool, depth: int) -> str:
    description = node.get("description")
    if not isinstance(description, str) or not description.strip():
        raise UndocumentedKey(
            f"schemas/pipeline.schema.json: key {path!r} has no description; "
            "the documentation is built from it, so add one")
    facts = [f"**Type:** {describe_type(node)}", "**required**" if required else "optional"]
    facts += _constraints(node)
    names = node.get("propertyNames")
    if isinstance(names, Mapping) and "pattern" in names:
        facts.append(f"names match `{names['pattern']}`")
    if isinstance(names, Mapping) and isinstance(names.get("not"), Mapping):
        reserved = ", ".join(f"`{n}`" for n in names["not"].get("enum", []))
        facts.append(f"reserved names: {reserved}")
    heading = "#" * min(depth + 1, 4)
    return f"{heading} `{path}` {{#{anchor(path)}}}\n\n{description.strip()}\n\n" \
           + " · ".join(facts) + "\n"


def _walk(node: Mapping[str, Any], path: str, required: bool, depth: int,
          root: Mapping[str, Any], out: list[str]) -> None:
    node = _resolve(node, root)
    out.append(_key_section(path, node, required, depth))
    needed = set(node.get("required", ()))
    for name, child in node.get("properties", {}).items():
        _walk(child, f"{path}.{name}", name in needed, depth + 1, root, out)
    extra = node.get("additionalProperties")
    if isinstance(extra, Mapping) and "$ref" in extra:
        _walk(extra, f"{path}.<name>", False, depth + 1, root, out)
    items = node.get("items")
    if isinstance(items, Mapping) and "properties" in items:
        needed_items = set(items.get("required", ()))
        for name, child in items["properties"].items():
            _walk(child, f"{path}[].{name}", name in needed_items, depth + 1, root, out)


def render_pipeline_keys(schema: Mapping[str, Any]) -> str:
    """The per-key reference page of a pipeline schema; UndocumentedKey for a bare key."""
    out = [
        "# Pipeline keys\n",
        "Every key a pipeline file may hold, generated from the JSON Schema civflow checks "
        "files against (`schemas/pipeline.schema.json`). The [guide](../guide/pipelines.md) "
        "shows the keys at work; this page is the exhaustive list.\n",
        "Keys civflow does not know are errors, with a suggestion when one is close. The keys "
        "*inside* a step's `input` belong to the Civitai step type and are listed in the "
        "[step catalog](steps/index.md).\n",
    ]
    needed = set(schema.get("required", ()))
    for name, child in schema.get("properties", {}).items():
        _walk(child, name, name in needed, 1, schema, out)
    step = schema.get("$defs", {}).get("step", {})
    if "not" in step or "dependentRequired" in step:
        out.append("## Rules across keys {#rules-across-keys}\n")
        if "not" in step:
            both = " and ".join(f"`{k}`" for k in step["not"].get("required", ()))
            out.append(f"- A step may not have both {both}.")
        for key, wants in step.get("dependentRequired", {}).items():
            out.append(f"- `{key}` is only allowed together with "
                       + ", ".join(f"`{w}`" for w in wants) + ".")
        out.append("")
    return "\n".join(out)


# -- step catalog ----------------------------------------------------------------------


def _field_rows(schema: Mapping[str, Any], discriminators: Mapping[str, str]) -> list[str]:
    needed = set(schema.get("required", ()))
    rows = []
    for name, field in schema.get("properties", {}).items():
        if name in discriminators:
            continue
        notes = "; ".join(_constraints(field)).replace("|", "\\|")
        kind = describe_type(field).replace("|", "\\|")
        rows.append(f"| `{name}` | {kind} | {'yes' if name in needed else ''} | {notes} |")
    return rows


def render_step_page(step_type: str, variants: Iterable[Any], outputs: Iterable[str],
                     fields: Iterable[tuple[str, str]] = ()) -> str:
    """One step type: what its output holds for templates, then each input variant (by
    its engine, ecosystem, …) and its fields."""
    variants = list(variants)
    fields = list(fields)
    kinds = ", ".join(outputs) or "no files (data only)"
    out = [f"# `{step_type}`\n",
           f"Files in its output: {kinds}. Input shapes civflow checks: {len(variants)}.\n",
           "A field not listed for the shape a step selects is an error, as is a value outside "
           "what is listed; `unchecked: true` on the step sends the input as written "
           "(see [Pipeline keys](../pipeline-keys.md#steps-name-unchecked)).\n"]
    if fields:
        out += ["## Output: what a template can read\n",
                "`steps.NAME.output.FIELD` (one instance), `steps.NAME.outputs[i].FIELD`, "
                "`steps.NAME[\"KEY\"].FIELD` and `steps.NAME.instances[i].output.FIELD`; "
                "`[]` is a list (index it, or `foreach` over it). `validate` rejects any "
                "other field.\n", "| field | notes |\n|---|---|"]
        out += [f"| `{path}` | {note} |" for path, note in fields]
        out.append("")
    for variant in variants:
        shown = ", ".join(f"{k} `{v}`" for k, v in variant.discriminators.items())
        title = shown or "input"
        out.append(f"## {title}\n")
        rows = _field_rows(variant.schema, variant.discriminators)
        if rows:
            out.append("| field | type | required | notes |\n|---|---|---|---|")
            out.extend(rows)
            out.append("")
        else:
            out.append("No fields besides the ones that select this shape.\n")
    return "\n".join(out)


def render_step_index(by_type: Mapping[str, list[Any]]) -> str:
    """The catalog's front page: every step type, and the engines each one checks."""
    out = ["# Step catalog\n",
           "Every Civitai step type civflow checks before anything is spent, generated from "
           "civflow's catalog data. A step's `type` selects the page; fields such as "
           "`engine`, `ecosystem`, `operation`, `version` or `provider` select the input "
           "shape on it.\n",
           "| step type | shapes | selected by |\n|---|---|---|"]
    for step_type, variants in sorted(by_type.items()):
        engines = sorted({v.discriminators.get("engine", "") for v in variants} - {""})
        selectors = sorted({k for v in variants for k in v.discriminators})
        what = ", ".join(f"`{s}`" for s in selectors) or "—"
        if engines:
            what += "; engines " + ", ".join(f"`{e}`" for e in engines)
        out.append(f"| [`{step_type}`]({step_type}.md) | {len(variants)} | {what} |")
    out.append("")
    return "\n".join(out)


# -- exit codes ------------------------------------------------------------------------

# One sentence per error class of the CLI's exit-code table, in the docs' own words.
EXIT_MEANINGS: dict[str, str] = {
    "UsageError": "the command line asks for something impossible: an unknown flag value, "
                  "a bad `--var`, an `--only` glob that matches nothing",
    "PipelineInvalid": "the pipeline file has errors; each is printed as `file:line:col` "
                       "with the line and a hint",
    "ApiRejected": "the API answered 400: it found a workflow body invalid",
    "FileAccessError": "a file exists but cannot be read or written (permissions, a full "
                       "disk, a path that would leave its folder)",
    "AuthenticationError": "no API key, a wrong key, or a refusal that is not about Buzz",
    "PipelineNotFound": "the pipeline file (or a file it includes) does not exist",
    "ApiNotFound": "the API does not know a workflow, blob or model AIR",
    "ServiceUnavailable": "the network or the service failed, still after every retry",
    "RateLimited": "the API kept answering 429, still after every retry",
    "StepsFailed": "one or more step instances failed, expired or were canceled",
    "InsufficientFunds": "the account has too little Buzz for a workflow",
    "SpendingRefused": "spending was refused: the plan is over `--max-cost`, the cap was "
                       "reached during the run, or nobody confirmed",
    "RunLocked": "another run of the same pipeline is in progress (`--wait` queues instead)",
    "RemoteError": "the artifact remote of `civflow push` / `pull` cannot be used",
    "RemoteUnreachable": "the artifact remote does not answer, does not exist, or its "
                         "storage library is not installed",
    "RemoteAccessDenied": "no credentials for the artifact remote, or they may not do this",
    "RemoteCorrupt": "objects on the artifact remote do not hash to their names",
}


def render_exit_codes(table: Iterable[tuple[type, int]]) -> str:
    """The exit-code page from the CLI's table; UndocumentedKey for a class without words."""
    rows = ["| code | meaning | raised as |", "|---|---|---|",
            "| 0 | success | |"]
    by_code: dict[int, list[str]] = {}
    for kind, code in table:
        words = EXIT_MEANINGS.get(kind.__name__)
        if words is None:
            raise UndocumentedKey(f"exit code {code} ({kind.__name__}) has no meaning in "
                                  "docs/hooks/reference.py EXIT_MEANINGS")
        by_code.setdefault(code, []).append(kind.__name__)
        rows.append(f"| {code} | {words} | `{kind.__name__}` |")
    rows.append("| 1 | anything else unexpected (a bug: please report it with the command) | |")
    rows.append("| 130 | interrupted (Ctrl-C at a prompt) | |")
    return "\n".join([
        "# Exit codes and environment\n",
        "`civflow` ends with one of these codes, from the CLI's own table (scripts and CI "
        "can branch on them). What to do about each is in "
        "[Troubleshooting](../troubleshooting.md).\n",
        *rows, "",
        "## Environment variables {#environment}\n",
        "| variable | effect |\n|---|---|",
        "| `CIVITAI_API_KEY` | the API key for real runs (or `--api-key-file`); never printed, "
        "logged or written |",
        "| `CIVITAI_BASE_URL` | where the client talks to (default: Civitai's orchestration "
        "service); point it at `civflow emulator` to test a long-running server |",
        "| `CIVFLOW_BACKEND` | `emulator` does what `--emulator` does |",
        "| `CIVFLOW_EMULATOR_TIME_SCALE` | speed of the in-process emulator's simulated jobs "
        "(`0` = instant) |",
        "| `CIVFLOW_REMOTE` | the URL of the artifact remote, replacing the one in "
        "`civflow.toml` (see [Sharing artifacts](../recipes/sharing-artifacts.md)) |",
        "| `CIVFLOW_JITTER_SEED` | seeds the retry back-off jitter (reproducible tests) |",
        "| `CIVFLOW_BACKOFF_CAP` | the longest pause, in seconds, between two attempts of a "
        "request to the API (default 30; a longer `Retry-After` is cut to it) |",
        "",
    ])


# -- the MkDocs side -------------------------------------------------------------------


def generated_pages() -> dict[str, str]:
    """Every generated page, by its path under docs/."""
    from civflow import catalog
    from civflow.cli import _exit

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    pages = {"reference/pipeline-keys.md": render_pipeline_keys(schema),
             "reference/exit-codes.md": render_exit_codes(_exit._EXIT_CODES)}
    by_type: dict[str, list[Any]] = {}
    for variant in catalog.catalogued_variants():
        by_type.setdefault(variant.step_type, []).append(variant)
    missing = set(catalog.known_types()) - set(by_type)
    if missing:
        raise UndocumentedKey(f"step types without catalog variants: {sorted(missing)}")
    pages["reference/steps/index.md"] = render_step_index(by_type)
    for step_type, variants in by_type.items():
        pages[f"reference/steps/{step_type}.md"] = render_step_page(
            step_type, variants, catalog.output_kinds(step_type),
            catalog.output_fields(step_type))
    return pages


def on_files(files: Any, config: Any) -> Any:
    """Add the generated pages; a committed file in their place is an error."""
    from mkdocs.exceptions import PluginError
    from mkdocs.structure.files import File

    try:
        pages = generated_pages()
    except UndocumentedKey as exc:
        raise PluginError(str(exc)) from exc
    for path, text in pages.items():
        if files.get_file_from_path(path) is not None:
            committed = (ROOT / "docs" / path).read_text(encoding="utf-8")
            if committed != text:
                raise PluginError(f"docs/{path} is stale: run python docs/hooks/reference.py")
            continue
        files.append(File.generated(config, path, content=text))
    return files


def write_pages(check: bool) -> list[str]:
    """Write the generated pages under docs/ (committed, so links work on GitHub); with
    `check`, write nothing and return the pages that are missing or stale."""
    stale: list[str] = []
    wanted = generated_pages()
    folder = ROOT / "docs" / "reference" / "steps"
    extra = [f"reference/steps/{p.name}" for p in folder.glob("*.md")
             if f"reference/steps/{p.name}" not in wanted] if folder.is_dir() else []
    for path, text in wanted.items():
        target = ROOT / "docs" / path
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not check:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
    if not check:
        for path in extra:
            (ROOT / "docs" / path).unlink()
    return stale + extra


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(ROOT))
    check = "--check" in sys.argv[1:]
    changed = write_pages(check)
    for path in changed:
        print(f"{'stale' if check else 'wrote'}: docs/{path}", file=sys.stderr)
    sys.exit(1 if check and changed else 0)
