"""The output shape of each step type (§6, §7): which paths exist and where the blobs are.

Hand-written for the types civflow knew first (with the fields set only sometimes);
read from the generated OpenAPI facts for every other type.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import Any

Path = tuple[str | int, ...]


class _Leaf:
    """A scalar value (string, number, boolean)."""


class _Open:
    """Any JSON value: civflow does not know (or constrain) what is inside."""


class _Blob(dict[str, Any]):
    """An object that is a blob: its `url` is something civflow downloads."""


class _ListOf:
    def __init__(self, item: object) -> None:
        self.item = item


class _MapOf:
    """An object keyed by arbitrary strings (tags, ratings)."""

    def __init__(self, value: object) -> None:
        self.value = value


class _Optional:
    """A field the step sets only sometimes, even when it succeeds (`field?` in §6)."""

    def __init__(self, shape: object) -> None:
        self.shape = shape


LEAF, OPEN = _Leaf(), _Open()
_BLOB_FIELDS = ("type", "id", "available", "url", "urlExpiresAt", "jobId", "nsfwLevel",
                "blockedReason", "tier")
BLOB = _Blob(dict.fromkeys(_BLOB_FIELDS, LEAF))
IMAGE_BLOB = _Blob(dict.fromkeys((*_BLOB_FIELDS, "width", "height", "previewUrl",
                                  "previewUrlExpiresAt"), LEAF))
VIDEO_BLOB = _Blob(dict.fromkeys((*_BLOB_FIELDS, "width", "height"), LEAF))

OUTPUTS: dict[str, dict[str, object]] = {
    "imageGen": {"images": _ListOf(IMAGE_BLOB), "errors": _ListOf(LEAF)},
    "textToImage": {"images": _ListOf(IMAGE_BLOB)},
    "imageUpscaler": {"blob": IMAGE_BLOB},
    "convertImage": {"blob": IMAGE_BLOB},
    "imageBackgroundRemoval": {"image": IMAGE_BLOB},
    "videoGen": {"video": VIDEO_BLOB, "additionalVideos": _Optional(_ListOf(VIDEO_BLOB)),
                 "draftCache": _Optional(BLOB)},
    "promptEnhancement": {"issues": _ListOf(OPEN), "recommendations": _ListOf(LEAF),
                          "enhancedPrompt": LEAF,
                          # only when the input had a negativePrompt (§6.6)
                          "enhancedNegativePrompt": _Optional(LEAF)},
    "chatCompletion": {
        "id": LEAF, "object": LEAF, "created": LEAF, "model": LEAF, "systemFingerprint": LEAF,
        "choices": _ListOf({"index": LEAF, "finishReason": LEAF, "logprobs": OPEN,
                            "message": {"role": LEAF, "content": OPEN, "name": LEAF,
                                        "toolCalls": OPEN}}),
        "usage": OPEN, "parsed": _Optional(OPEN),  # parsed: only for a json_schema response
    },
    "wdTagging": {"tags": _MapOf(LEAF), "rating": _Optional(_MapOf(LEAF))},
    "echo": {"message": LEAF},
}


def _show(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_BLOB_DEFS = {"ImageBlob": IMAGE_BLOB, "VideoBlob": VIDEO_BLOB, "Blob": BLOB,
              "AudioBlob": BLOB, "Model3DBlob": BLOB}
# Deep enough for every output of the document; a bound, since schemas may recur.
_MAX_SHAPE_DEPTH = 8


def _shape(step_type: str) -> object:
    """The hand-written shape of a type's output, else one read from the generated data.

    Which fields a step sets only sometimes is hand-written knowledge (the document does
    not say it reliably), so a generated shape marks nothing optional.
    """
    if step_type in OUTPUTS:
        return OUTPUTS[step_type]
    return _generated_shape(step_type)


@cache
def _generated_shape(step_type: str) -> object:
    from civflow.catalog._spec import output_schema  # lazy: loads the generated data

    schema = output_schema(step_type)
    if schema is None:
        return None
    defs: dict[str, Any] = schema.get("$defs", {})

    def shape(node: object, depth: int) -> object:
        if not isinstance(node, dict) or depth > _MAX_SHAPE_DEPTH:
            return OPEN
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.removeprefix("#/$defs/")
            return _BLOB_DEFS.get(name) or shape(defs.get(name), depth + 1)
        types = node.get("type")
        kinds = {types} if isinstance(types, str) else set(types or ())
        if "properties" in node:
            return {k: shape(v, depth + 1) for k, v in node["properties"].items()}
        if "array" in kinds:
            return _ListOf(shape(node.get("items"), depth + 1))
        if "object" in kinds:
            extra = node.get("additionalProperties")
            return _MapOf(shape(extra, depth + 1)) if isinstance(extra, dict) else OPEN
        if kinds - {"null"} or "enum" in node or "const" in node:
            return LEAF
        return OPEN

    return shape(schema, 0)


def _index(part: str | int) -> int | None:
    if isinstance(part, int):
        return part
    return int(part) if part.isdigit() else None


class OutputIssueKind(Enum):
    NO_FIELD = "no-field"  # an object without that field
    NOT_A_LIST = "not-a-list"  # an index or a name used on a list needing an index
    NOT_AN_OBJECT = "not-an-object"  # an index on an object
    SINGLE_VALUE = "single-value"  # a field of a scalar
    OPTIONAL = "optional"  # the path exists, but through a field set only sometimes


@dataclass(frozen=True)
class OutputIssue:
    """Why a path into a step's output may not exist, as data and as words.

    `at` is the part of the path that is fine (the object or list concerned), `part` the
    offending step of the path (for OPTIONAL: the optional field, whose prefix is `at`),
    `fields` the fields of the object at `at`, `suggestions` the close matches of `part`.
    """

    kind: OutputIssueKind
    step_type: str
    at: Path
    part: str | int
    message: str
    fields: tuple[str, ...] = ()
    suggestions: tuple[str, ...] = ()

    @property
    def is_error(self) -> bool:
        """OPTIONAL is fine when guarded; every other kind is a path that cannot exist."""
        return self.kind is not OutputIssueKind.OPTIONAL


def output_path_issue(step_type: str, input: Mapping[str, object], path: Path
                      ) -> OutputIssue | None:
    """None if `path` always exists in the step's output once it succeeded, else why not.

    A path through an optional field gives an OPTIONAL issue, unless a later part of the
    path cannot exist at all, which is the issue then.
    """
    del input  # the output shape does not depend on the input for any catalogued type
    shape: object = _shape(step_type)
    if shape is None:
        return None
    done: Path = ()
    optional: OutputIssue | None = None
    for part in path:
        where = f"{step_type} output" + (f" '{_show(done)}'" if done else "")
        if isinstance(shape, _Open):
            break
        if isinstance(shape, _ListOf):
            index = _index(part)
            if index is None:
                return OutputIssue(OutputIssueKind.NOT_A_LIST, step_type, done, part,
                                   f"{where} is a list; use an index like [0], not '{part}'")
            shape, done = shape.item, (*done, index)
        elif isinstance(shape, _MapOf):
            shape, done = shape.value, (*done, part)
        elif isinstance(shape, dict):
            if isinstance(part, int):
                return OutputIssue(OutputIssueKind.NOT_AN_OBJECT, step_type, done, part,
                                   f"{where} is an object, not a list; index [{part}] does not "
                                   "apply", tuple(sorted(shape)))
            if part not in shape:
                close = difflib.get_close_matches(part, sorted(shape), n=1, cutoff=0.6)
                return OutputIssue(OutputIssueKind.NO_FIELD, step_type, done, part,
                                   f"{where} has no field '{part}'", tuple(sorted(shape)),
                                   tuple(close))
            shape = shape[part]
            if isinstance(shape, _Optional):
                if optional is None:
                    optional = OutputIssue(OutputIssueKind.OPTIONAL, step_type, done, part,
                                           f"{where} has '{part}' only sometimes")
                shape = shape.shape
            done = (*done, part)
        else:
            return OutputIssue(OutputIssueKind.SINGLE_VALUE, step_type, done, part,
                               f"{where} is a single value; it has no field '{part}'")
    return optional


# The fields whose product is how many images one instance of a type makes; a field left
# unset counts as the API's default of 1.
_IMAGE_COUNT_FIELDS: Mapping[str, tuple[str, ...]] = {
    "imageGen": ("quantity",), "textToImage": ("quantity", "batchSize")}
_MAX_IMAGES = 1000


def image_count(step_type: str, input: Mapping[str, object]) -> int | None:
    """How many images one instance makes in `images`, when its input fixes it
    (imageGen: `quantity`; textToImage: `quantity` × `batchSize`); None for other types
    and for a value that is a template (known at run time) or out of range."""
    fields = _IMAGE_COUNT_FIELDS.get(step_type)
    if fields is None:
        return None
    count = 1
    for name in fields:
        value = input.get(name, 1)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= _MAX_IMAGES:
            return None
        count *= value
    return count if count <= _MAX_IMAGES else None


def output_path_error(step_type: str, input: Mapping[str, object], path: Path) -> str | None:
    """None if `path` can exist in the step's output, else a message saying why not.

    The words of `output_path_issue`, with its suggestion appended; optional fields count
    as existing here.
    """
    issue = output_path_issue(step_type, input, path)
    if issue is None or not issue.is_error:
        return None
    if issue.kind is OutputIssueKind.NO_FIELD:
        tail = f"; did you mean '{issue.suggestions[0]}'?" if issue.suggestions else \
            f"; it has: {', '.join(issue.fields)}"
        return issue.message + tail
    return issue.message


def blob_paths(step_type: str, input: Mapping[str, object],
               output: Mapping[str, object]) -> list[Path]:
    """Paths inside an actual output object where blobs (objects with an id) are."""
    del input
    found: list[Path] = []
    shape = _shape(step_type)

    def walk(value: object, shape: object, path: Path) -> None:
        if isinstance(shape, _Optional):
            shape = shape.shape
        if isinstance(shape, _Blob):
            if isinstance(value, Mapping) and "id" in value:
                found.append(path)
        elif isinstance(shape, _ListOf) and isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, shape.item, (*path, i))
        elif isinstance(shape, dict) and isinstance(value, Mapping):
            for key in shape:
                if key in value:
                    walk(value[key], shape[key], (*path, key))
        elif shape is None:
            # An uncatalogued type: anything shaped like a blob counts.
            if isinstance(value, Mapping):
                if "id" in value and "url" in value:
                    found.append(path)
                    return
                for key in value:
                    walk(value[key], None, (*path, str(key)))
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    walk(item, None, (*path, i))

    walk(output, shape, ())
    return found


_MAX_FIELDS = 200


def output_fields(step_type: str) -> list[tuple[str, str]]:
    """(path, note) of every field a template can read in a step's output, as written in
    a template (`images[].url`); notes say `sometimes` and `download`. Bounded in depth
    and count, since generated shapes may be large."""
    out: list[tuple[str, str]] = []

    def walk(shape: object, path: str, notes: tuple[str, ...], depth: int) -> None:
        if len(out) >= _MAX_FIELDS or depth > _MAX_SHAPE_DEPTH:
            return
        if isinstance(shape, _Optional):
            walk(shape.shape, path, (*notes, "sometimes"), depth)
        elif isinstance(shape, _ListOf):
            walk(shape.item, f"{path}[]", notes, depth + 1)
        elif isinstance(shape, _MapOf):
            walk(shape.value, f"{path}[KEY]", notes, depth + 1)
        elif isinstance(shape, dict):
            blob = ("a blob: civflow downloads its url",) if isinstance(shape, _Blob) else ()
            if path:
                out.append((path, ", ".join((*notes, *blob))))
            for key, inner in shape.items():
                walk(inner, f"{path}.{key}" if path else key, notes, depth + 1)
        elif path:
            out.append((path, ", ".join(notes) + ("any JSON" if shape is OPEN and not notes
                                                  else "")))

    walk(_shape(step_type), "", (), 0)
    return out
