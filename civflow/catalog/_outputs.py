"""The output shape of each step type (§6, §7): which paths exist and where the blobs are."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
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
    "videoGen": {"video": VIDEO_BLOB, "additionalVideos": _ListOf(VIDEO_BLOB), "draftCache": BLOB},
    "promptEnhancement": {"issues": _ListOf(OPEN), "recommendations": _ListOf(LEAF),
                          "enhancedPrompt": LEAF, "enhancedNegativePrompt": LEAF},
    "chatCompletion": {
        "id": LEAF, "object": LEAF, "created": LEAF, "model": LEAF, "systemFingerprint": LEAF,
        "choices": _ListOf({"index": LEAF, "finishReason": LEAF, "logprobs": OPEN,
                            "message": {"role": LEAF, "content": OPEN, "name": LEAF,
                                        "toolCalls": OPEN}}),
        "usage": OPEN, "parsed": OPEN,
    },
    "wdTagging": {"tags": _MapOf(LEAF), "rating": _MapOf(LEAF)},
    "echo": {"message": LEAF},
}


def _show(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _index(part: str | int) -> int | None:
    if isinstance(part, int):
        return part
    return int(part) if part.isdigit() else None


def output_path_error(step_type: str, input: Mapping[str, object], path: Path) -> str | None:
    """None if `path` can exist in the step's output, else a message saying why not."""
    del input  # the output shape does not depend on the input for any catalogued type
    shape: object = OUTPUTS.get(step_type)
    if shape is None:
        return None
    done: Path = ()
    for part in path:
        where = f"{step_type} output" + (f" '{_show(done)}'" if done else "")
        if isinstance(shape, _Open):
            return None
        if isinstance(shape, _ListOf):
            index = _index(part)
            if index is None:
                return f"{where} is a list; use an index like [0], not '{part}'"
            shape, done = shape.item, (*done, index)
            continue
        if isinstance(shape, _MapOf):
            shape, done = shape.value, (*done, part)
            continue
        if isinstance(shape, dict):
            if isinstance(part, int):
                return f"{where} is an object, not a list; index [{part}] does not apply"
            if part not in shape:
                close = difflib.get_close_matches(part, sorted(shape), n=1, cutoff=0.6)
                tail = f"; did you mean '{close[0]}'?" if close else \
                    f"; it has: {', '.join(sorted(shape))}"
                return f"{where} has no field '{part}'{tail}"
            shape, done = shape[part], (*done, part)
            continue
        return f"{where} is a single value; it has no field '{part}'"
    return None


def blob_paths(step_type: str, input: Mapping[str, object],
               output: Mapping[str, object]) -> list[Path]:
    """Paths inside an actual output object where blobs (objects with an id) are."""
    del input
    found: list[Path] = []
    shape = OUTPUTS.get(step_type)

    def walk(value: object, shape: object, path: Path) -> None:
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
