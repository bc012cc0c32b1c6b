"""The typed, immutable form of a pipeline file, built once it has passed the schema."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from civflow.errors import Location
from civflow.keys import KeyPath
from civflow.loading.yamlsrc import SourceDoc
from civflow.names import lockfile_path_for

RESERVED_NAMES = frozenset({"steps", "matrix", "item", "index", "run", "pipeline"})

# Workflow options in the pipeline file -> the WorkflowTemplate field they fill.
WORKFLOW_FIELDS = ("metadata", "callbacks", "allowMatureContent", "nsfwLevel", "currencies",
                   "tips", "upgradeMode")


@dataclass(frozen=True)
class StepSpec:
    """One step as written, with `defaults` already merged under its input."""

    name: str
    type: str
    input: Mapping[str, Any]
    needs: tuple[str, ...] = ()
    matrix: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    foreach: str | None = None
    key: str | None = None  # names each foreach instance (a template over `item`)
    when: str | bool | None = None
    timeout: str | None = None
    retries: int | None = None
    priority: str | None = None
    order: int = 0
    # input paths whose value came from `defaults:` rather than the step itself
    defaulted: frozenset[KeyPath] = frozenset()
    # for each of those, the document path of the `defaults:` entry it came from:
    # ("defaults", "imageGen/sdxl") or ("defaults", "sets", "portrait", "imageGen")
    default_sources: Mapping[KeyPath, KeyPath] = field(default_factory=dict)
    # the named default sets the step opts into (`defaults: portrait`), in order
    default_sets: tuple[str, ...] = ()
    # `unchecked: true`: the input is sent as written, not checked against the catalog
    unchecked: bool = False

    @property
    def fans_out(self) -> bool:
        return bool(self.matrix) or self.foreach is not None

    def options(self, default_priority: str | None = None) -> dict[str, Any]:
        """The step-template fields besides the input, as sent to the API."""
        out: dict[str, Any] = {}
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if self.retries is not None:
            out["retries"] = self.retries
        priority = self.priority or default_priority
        if priority is not None:
            out["priority"] = priority
        return out


# How many instances a pipeline may expand to unless its `limits.instances` says more
# (the schema allows up to 100,000): a 20 KB file can name a billion combinations, and
# validate and plan must answer it at once instead of expanding them.
MAX_INSTANCES = 10_000


@dataclass(frozen=True)
class PipelineSpec:
    """A validated pipeline: its steps in file order, its variables after overrides."""

    path: FsPath
    name: str
    description: str | None
    vars: Mapping[str, Any]
    steps: Mapping[str, StepSpec]
    workflow: Mapping[str, Any]
    tags: tuple[str, ...]
    doc: SourceDoc = field(repr=False)
    # Variables set by --var / --vars-file to something else than the file's defaults.
    overrides: Mapping[str, Any] = field(default_factory=dict)
    # `civflow run --batch N`: overrides the file's top-level `batch` key.
    batch_override: int | None = None
    # Fusion of chains into their source's workflows (on with batching; the environment's
    # CIVFLOW_FUSE=0 turns it off, read once when the pipeline is loaded, so `plan`,
    # `render` and `run` group workflows alike).
    fuse: bool = True

    @property
    def batch(self) -> int | None:
        """Steps per workflow: `--batch`, else the file's `batch` key (schema-checked),
        else None (the runner's default)."""
        if self.batch_override is not None:
            return self.batch_override
        data = self.doc.data
        value = data.get("batch") if isinstance(data, Mapping) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def instance_limit(self) -> int:
        """The most instances the pipeline may expand to: its `limits.instances`
        (schema-checked), else MAX_INSTANCES."""
        data = self.doc.data
        limits = data.get("limits") if isinstance(data, Mapping) else None
        value = limits.get("instances") if isinstance(limits, Mapping) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        return MAX_INSTANCES

    @property
    def base_dir(self) -> FsPath:
        return self.path.parent

    @property
    def project_root(self) -> FsPath:
        """Where `.civflow/` and `out/` live (see `project_root_for`)."""
        return project_root_for(self.path)

    @property
    def lockfile_path(self) -> FsPath:
        return lockfile_path_for(self.path)

    def input_path(self, step: str, path: KeyPath) -> KeyPath:
        """The document path of an input value: the step's own, or the defaults entry."""
        spec = self.steps[step]
        for cut in range(len(path), 0, -1):
            if path[:cut] in spec.defaulted:
                return (*spec.default_sources.get(path[:cut], ("defaults", spec.type)), *path)
        return ("steps", step, "input", *path)

    def input_location(self, step: str, path: KeyPath, *, key: bool = False) -> Location:
        return self.doc.location(self.input_path(step, path), key=key)


def step_defaults(defaults: Mapping[str, Any], step_type: str, own: Mapping[str, Any],
                  sets: Sequence[str] = ()) -> tuple[dict[str, Any], dict[KeyPath, KeyPath]]:
    """The defaults that apply to one step, and the `defaults:` entry that gave each path.

    `TYPE` applies to every step of the type, `TYPE/ECOSYSTEM` and then `TYPE/ENGINE`
    over it to the steps of that ecosystem or engine; then the same keys of each named
    set the step opts into (`defaults.sets.NAME`), in the order it names them. The step's
    engine is its own, else the last one a `TYPE` entry names. A `TYPE` entry that names
    another engine is not given to the step: it describes another input shape (SDXL
    fields on Flux Kontext).
    """
    named = defaults.get("sets")
    tables: list[tuple[KeyPath, Mapping[str, Any]]] = [(("defaults",), defaults)]
    tables += [(("defaults", "sets", name), named[name]) for name in sets
               if isinstance(named, Mapping) and isinstance(named.get(name), Mapping)]
    plains = [table.get(step_type) for _, table in tables]
    engine = own.get("engine")
    if engine is None:  # a set (later) picks the engine over `TYPE` (earlier)
        named_engines = [p["engine"] for p in plains if isinstance(p, Mapping) and "engine" in p]
        engine = named_engines[-1] if named_engines else None
    kept = [plain if isinstance(plain, Mapping) and plain.get("engine") in (None, engine)
            else {} for plain in plains]
    ecosystem = own.get("ecosystem")
    if "ecosystem" not in own:
        named_ecosystems = [p["ecosystem"] for p in kept if "ecosystem" in p]
        ecosystem = named_ecosystems[-1] if named_ecosystems else None
    scopes = [f"{step_type}/{scope}" for scope in (ecosystem, engine)
              if isinstance(scope, str) and scope]
    merged: dict[str, Any] = {}
    sources: dict[KeyPath, KeyPath] = {}
    for (where, table), plain in zip(tables, kept, strict=True):
        for key in dict.fromkeys([step_type, *scopes]):
            entry = plain if key == step_type else table.get(key)
            if not isinstance(entry, Mapping) or not entry:
                continue
            merged, _ = deep_merge(merged, entry)
            sources.update(dict.fromkeys(_paths(entry), (*where, key)))
    return merged, sources


def opted_sets(value: Any) -> tuple[str, ...]:
    """A step's `defaults:` key as the names of the sets it opts into, in order."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def _paths(value: Mapping[str, Any], path: KeyPath = ()) -> list[KeyPath]:
    out: list[KeyPath] = []
    for key, inner in value.items():
        out.append((*path, key))
        if isinstance(inner, Mapping):
            out += _paths(inner, (*path, key))
    return out


def deep_merge(base: Mapping[str, Any], own: Mapping[str, Any], path: KeyPath = ()
               ) -> tuple[dict[str, Any], set[KeyPath]]:
    """Merge `own` over `base` (mappings merge, everything else is replaced).

    Returns the merged mapping and the paths whose value came from `base` alone.
    """
    merged: dict[str, Any] = {}
    from_base: set[KeyPath] = set()
    for key, value in base.items():
        if key not in own:
            merged[key] = value
            from_base.add((*path, key))
    for key, value in own.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            merged[key], inner = deep_merge(base[key], value, (*path, key))
            from_base |= inner
        else:
            merged[key] = value
    return merged, from_base


def project_root_for(pipeline_file: FsPath) -> FsPath:
    """Where `.civflow/` and `out/` live: the nearest ancestor of the pipeline file that
    has a `.civflow` folder or is a git checkout, else the pipeline's own folder."""
    here = pipeline_file.resolve().parent
    for folder in (here, *here.parents):
        if (folder / ".civflow").is_dir() or (folder / ".git").exists():
            return folder
    return here
