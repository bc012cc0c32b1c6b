"""Outputs for step types the emulator has no bespoke simulation of, shaped by the catalog.

The OpenAPI document gives every step type's output schema (kept as facts in the
catalog's generated data). This module answers with an output of that shape: every
required field, plus every field that holds a blob, so a pipeline may reference
`output.model` as readily as `output.images[0]`. Blobs are small placeholders of the
right kind and media type: a picture for images, a short clip for videos, a second of
silence (WAV) for audio, a minimal binary glTF for 3D models.
"""

from __future__ import annotations

import io
import struct
import wave
from typing import Any

from civflow import catalog
from civflow.emulator import _media as media
from civflow.emulator._blobs import CONTENT_TYPES, BlobInfo
from civflow.emulator._ids import blob_id

Blob = tuple[BlobInfo, bytes]
# Bounds on the output walk: schemas may refer to themselves.
_MAX_DEPTH = 6
_BLOB_KINDS = {"ImageBlob": "image", "VideoBlob": "video", "AudioBlob": "audio",
               "Model3DBlob": "model3d", "Blob": "image"}


def _silence(seconds: float = 1.0, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * int(rate * seconds))
    return buffer.getvalue()


def _glb() -> bytes:
    """The smallest valid binary glTF 2.0: a JSON chunk naming an empty scene."""
    document = b'{"asset":{"version":"2.0"},"scenes":[{}],"scene":0}'
    document += b" " * (-len(document) % 4)
    chunk = struct.pack("<I4s", len(document), b"JSON") + document
    return struct.pack("<4sII", b"glTF", 2, 12 + len(chunk)) + chunk


def placeholder(kind: str, prompt: str, seed: int, job: str) -> Blob:
    """One blob of `kind` (image, video, audio, model3d) with its proper media type."""
    if kind == "video":
        frames = media.video_frames(source=None, prompt=prompt, seed=seed, width=160,
                                    height=90, count=8)
        raw, ext = media.encode_video(frames, 8)
        return BlobInfo(blob_id(ext), CONTENT_TYPES[ext], "video", len(raw), 160, 90,
                        job), raw
    if kind == "audio":
        raw = _silence()
        return BlobInfo(blob_id("wav"), CONTENT_TYPES["wav"], "audio", len(raw),
                        job_id=job), raw
    if kind == "model3d":
        raw = _glb()
        return BlobInfo(blob_id("glb"), CONTENT_TYPES["glb"], "model3d", len(raw),
                        job_id=job), raw
    raw = media.render_image(prompt=prompt, negative=None, seed=seed, width=256, height=256,
                             label=kind, fmt="png")
    return BlobInfo(blob_id("png"), CONTENT_TYPES["png"], "image", len(raw), 256, 256,
                    job), raw


def render(step_type: str, data: dict[str, Any], jobs: list[str],
           seed: int) -> tuple[dict[str, Any], list[Blob]]:
    """An output of the shape the catalog gives `step_type`, and the blobs it names."""
    schema = catalog.output_schema(step_type) or {}
    defs: dict[str, Any] = schema.get("$defs", {})
    prompt = next((v for k in ("prompt", "text", "message") if isinstance(
        v := data.get(k), str)), step_type)
    blobs: list[Blob] = []

    def value(node: Any, name: str, depth: int) -> Any:
        if not isinstance(node, dict) or depth > _MAX_DEPTH:
            return None
        ref = node.get("$ref")
        if isinstance(ref, str):
            target = ref.removeprefix("#/$defs/")
            if target in _BLOB_KINDS:
                info, raw = placeholder(_BLOB_KINDS[target], prompt, seed + len(blobs),
                                        jobs[0])
                blobs.append((info, raw))
                return {"$blob": info.id}
            return value(defs.get(target), name, depth + 1)
        if "const" in node:
            return node["const"]
        if "enum" in node:
            options = [v for v in node["enum"] if v is not None]
            return options[0] if options else None
        types = node.get("type", "object" if "properties" in node else "string")
        kind = types if isinstance(types, str) else next(
            (t for t in types if t != "null"), "null")
        if kind == "object":
            props: dict[str, Any] = node.get("properties", {})
            wanted = [p for p in props if p in node.get("required", ()) or _holds_blob(
                props[p], defs, 0)]
            return {p: value(props[p], p, depth + 1) for p in wanted}
        if kind == "array":
            return [value(node.get("items"), name, depth + 1)]
        if kind in ("integer", "number"):
            low = node.get("minimum", 0)
            return int(low) if kind == "integer" else float(low)
        if kind == "boolean":
            return False
        if kind == "string":
            return f"{name or 'text'} of {prompt}"[:200]
        return None

    out = value(schema, "", 0)
    return (out if isinstance(out, dict) else {}), blobs


def _holds_blob(node: Any, defs: dict[str, Any], depth: int) -> bool:
    """Whether a field's schema is a blob, or a list of blobs (one level deep)."""
    if not isinstance(node, dict) or depth > 1:
        return False
    ref = node.get("$ref")
    if isinstance(ref, str):
        return ref.removeprefix("#/$defs/") in _BLOB_KINDS
    return _holds_blob(node.get("items"), defs, depth + 1)
