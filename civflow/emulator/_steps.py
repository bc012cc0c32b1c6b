"""What each step type produces: simulated durations and real, deterministic outputs.

Renderers run in a worker thread. They take the resolved step input and a `fetch`
callable for source media, and return the output tree (blobs as `{"$blob": id}`
markers) plus the new blobs; they never touch the emulator's state themselves.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from civflow import catalog
from civflow.emulator import _generic
from civflow.emulator import _media as media
from civflow.emulator._blobs import CONTENT_TYPES, BlobInfo
from civflow.emulator._ids import blob_id

Fetch = Callable[[str], bytes]


class StepFailure(Exception):
    """The job failed the way a worker would (unreachable source, unreadable image…)."""


@dataclass
class Rendered:
    output: dict[str, Any]
    blobs: list[tuple[BlobInfo, bytes]] = field(default_factory=list)


def _int(value: object, default: int) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def _num(value: object, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return default


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def image_count(step_type: str, data: dict[str, Any]) -> tuple[int, int]:
    """(jobs, images per job) for image-producing steps."""
    if step_type == "textToImage":
        return max(_int(data.get("quantity"), 1), 1), max(_int(data.get("batchSize"), 1), 1)
    if step_type == "imageGen":
        return max(_int(data.get("quantity"), 1), 1), 1
    return 1, 1


def _default_side(step_type: str, data: dict[str, Any]) -> int:
    """512 for SD1 and textToImage, 1024 otherwise (the catalog prices with the same)."""
    return 512 if step_type == "textToImage" or data.get("ecosystem") == "sd1" else 1024


def duration(step_type: str, data: dict[str, Any]) -> float:
    """Simulated seconds a real worker would take (before `time_scale`)."""
    if step_type in ("imageGen", "textToImage"):
        side = _default_side(step_type, data)
        mp = _int(data.get("width"), side) * _int(data.get("height"), side) / 1024**2
        jobs, per_job = image_count(step_type, data)
        return 2.0 + 4.0 * mp * _int(data.get("steps"), 20) / 20 * jobs * per_job
    if step_type == "imageUpscaler":
        return 3.0 * float(2 ** _int(data.get("numberOfRepeats"), 1))
    if step_type == "videoGen":
        return 30.0 * _num(data.get("duration"), 5) / 5
    return {"echo": 0.5, "convertImage": 1.0, "wdTagging": 1.5, "promptEnhancement": 2.0,
            "chatCompletion": 2.0, "imageBackgroundRemoval": 2.0}.get(step_type, 5.0)


def _canonical(value: Any) -> Any:
    """The input with media references blanked: their URLs carry signatures and ids."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, str) and value.startswith(("http://", "https://", "data:")):
        return "<media>"
    return value


def _seed(data: dict[str, Any], source: bytes | None = None) -> int:
    seed = data.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0:
        return seed
    # The real service picks a random seed; a hash of the input and of the source bytes
    # (not of their URLs, which differ per emulator) keeps the emulator deterministic.
    digest = hashlib.sha256(source).hexdigest() if source is not None else None
    return media.stable_seed(_canonical(data), digest) % 2**32


_DATA_URL = re.compile(r"^data:[\w/+.-]+;base64,(?P<data>.*)$", re.S)


def load_source(value: object, fetch: Fetch) -> bytes:
    """Bytes of an image given as URL, data URL or bare base64."""
    text = _text(value)
    if not text:
        raise StepFailure("no source image was given")
    match = _DATA_URL.match(text)
    if match:
        text = match.group("data")
    elif text.startswith(("http://", "https://")):
        return fetch(text)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise StepFailure("the source image is neither a URL nor base64 data") from exc


def _image_blob(data: bytes, fmt: str, width: int, height: int, job: str) -> tuple[BlobInfo, bytes]:
    info = BlobInfo(id=blob_id(fmt), content_type=CONTENT_TYPES[fmt], kind="image",
                    size=len(data), width=width, height=height, job_id=job)
    return info, data


def _first_source(data: dict[str, Any], *keys: str) -> object:
    for key in keys:
        value = data.get(key)
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, dict):
            value = value.get("url") or value.get("image")
        if isinstance(value, str) and value:
            return value
    return None


def _images(step_type: str, data: dict[str, Any], jobs: list[str], fetch: Fetch) -> Rendered:
    job_count, per_job = image_count(step_type, data)
    side = _default_side(step_type, data)
    width, height = _int(data.get("width"), side), _int(data.get("height"), side)
    fmt = media.normalize_format(data.get("outputFormat"), "jpeg")
    prompt, negative = _text(data.get("prompt")), _text(data.get("negativePrompt")) or None
    source_ref = _first_source(data, "sourceImage", "image", "images")
    variant = source_ref is not None and data.get("operation") != "createImage"
    source = load_source(source_ref, fetch) if variant else None
    seed = _seed(data, source)
    strength = _num(data.get("strength", data.get("denoiseStrength",
                                                  data.get("sourceImageDenoiseStrenght"))), 0.7)
    model = _text(data.get("model") or data.get("diffuserModel") or data.get("engine"))
    # Every input that would change a real picture changes this one: the scene is salted
    # with all of them (LoRA strengths, cfg, steps, sampler…), and LoRAs are written on it.
    salt = {k: v for k, v in data.items()
            if k not in ("prompt", "negativePrompt", "seed", "quantity", "batchSize")}
    loras = _lora_lines(data)
    rendered = Rendered(output={"images": []})
    total = job_count * per_job
    for number in range(total):
        job = jobs[min(number // per_job, len(jobs) - 1)]
        label = f"#{number + 1}/{total}  {model.rsplit(':', 1)[-1]}"
        if source is not None:
            raw = media.render_variant(source, prompt=prompt, seed=seed + number,
                                       strength=strength, width=data.get("width") and width,
                                       height=data.get("height") and height, label=label,
                                       fmt=fmt)
            picture = media.decode(raw)
            w, h = picture.width, picture.height
        else:
            raw = media.render_image(prompt=prompt, negative=negative, seed=seed + number,
                                     width=width, height=height, label=label, fmt=fmt,
                                     salt=salt, extra=loras)
            w, h = width, height
        info, blob = _image_blob(raw, fmt, w, h, job)
        rendered.blobs.append((info, blob))
        rendered.output["images"].append({"$blob": info.id})
    return rendered


def _lora_lines(data: dict[str, Any]) -> list[str]:
    """`lora 250000: 0.8` for each LoRA of the input (a mapping AIR → strength, or a list)."""
    found: list[tuple[str, object]] = []
    for key in ("loras", "additionalNetworks"):
        value = data.get(key)
        if isinstance(value, dict):
            for air, setting in value.items():
                strength = setting.get("strength") if isinstance(setting, dict) else setting
                found.append((str(air), strength))
        elif isinstance(value, list):
            found += [(str(i.get("air")), i.get("strength")) for i in value if isinstance(i, dict)]
    return [f"lora {air.rsplit(':', 1)[-1]}: {strength}" for air, strength in found[:6]]


def _upscale(data: dict[str, Any], jobs: list[str], fetch: Fetch) -> Rendered:
    source = load_source(data.get("image"), fetch)
    fmt = media.normalize_format(media.decode(source).format, "png")
    raw, w, h = media.upscale(source, repeats=_int(data.get("numberOfRepeats"), 1), fmt=fmt)
    info, blob = _image_blob(raw, fmt, w, h, jobs[0])
    return Rendered({"blob": {"$blob": info.id}}, [(info, blob)])


def _convert(data: dict[str, Any], jobs: list[str], fetch: Fetch) -> Rendered:
    source = load_source(data.get("image"), fetch)
    out = data.get("output") if isinstance(data.get("output"), dict) else {}
    assert isinstance(out, dict)
    fmt = media.normalize_format(out.get("format"), "png")
    target = None
    for transform in data.get("transforms") or []:
        if isinstance(transform, dict) and transform.get("type") == "resize":
            target = _int(transform.get("targetWidth"), 0) or None
    raw, w, h = media.convert(source, fmt=fmt, target_width=target,
                              quality=_int(out.get("quality"), 0) or None,
                              lossless=out.get("lossless") is True)
    info, blob = _image_blob(raw, fmt, w, h, jobs[0])
    return Rendered({"blob": {"$blob": info.id}}, [(info, blob)])


def _cutout(data: dict[str, Any], jobs: list[str], fetch: Fetch) -> Rendered:
    source = load_source(data.get("image"), fetch)
    fmt = media.normalize_format(data.get("format"), "png")
    raw, w, h = media.remove_background(source, fmt=fmt)
    info, blob = _image_blob(raw, "webp" if fmt == "webp" else "png", w, h, jobs[0])
    return Rendered({"image": {"$blob": info.id}}, [(info, blob)])


_ASPECTS = {"16:9": (480, 270), "9:16": (270, 480), "1:1": (360, 360), "4:3": (480, 360),
            "3:4": (360, 480)}


def _video(data: dict[str, Any], jobs: list[str], fetch: Fetch) -> Rendered:
    source_ref = _first_source(data, "images", "sourceImage", "sourceImageUrl", "startImage",
                               "image")
    source = load_source(source_ref, fetch) if source_ref is not None else None
    width, height = _ASPECTS.get(_text(data.get("aspectRatio")), (480, 270))
    seconds = max(1, min(_int(data.get("duration"), 5), 20))
    fps = 8
    frames = media.video_frames(source=source, prompt=_text(data.get("prompt")),
                                seed=_seed(data, source), width=width, height=height,
                                count=seconds * fps)
    raw, ext = media.encode_video(frames, fps)
    info = BlobInfo(id=blob_id(ext), content_type=CONTENT_TYPES[ext], kind="video",
                    size=len(raw), width=width, height=height, job_id=jobs[0])
    return Rendered({"video": {"$blob": info.id}}, [(info, raw)])


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[^\w'-]+", text.lower()) if w]


def _enhance(data: dict[str, Any]) -> Rendered:
    prompt = _text(data.get("prompt")).strip()
    negative = _text(data.get("negativePrompt")).strip()
    extras = ["highly detailed", "sharp focus", "balanced composition", "soft natural light"]
    enhanced = ", ".join([prompt, *[e for e in extras if e not in prompt.lower()]])
    issues = []
    if len(_words(prompt)) < 5:
        issues.append({"description": "The prompt is short; add subject, setting and style.",
                       "severity": "warning"})
    output: dict[str, Any] = {
        "enhancedPrompt": enhanced,
        "issues": issues,
        "recommendations": ["Name a lighting style.", "Describe the camera or medium."],
    }
    if negative:
        output["enhancedNegativePrompt"] = ", ".join([negative, "lowres", "jpeg artifacts"])
    return Rendered(output)


def _chat(data: dict[str, Any]) -> Rendered:
    messages = [m for m in data.get("messages") or [] if isinstance(m, dict)]
    last = ""
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            last = content
        elif isinstance(content, list):
            last = " ".join(_text(p.get("text")) for p in content if isinstance(p, dict))
    digest = hashlib.sha256(last.encode()).hexdigest()
    fmt = data.get("responseFormat")
    kind = fmt.get("type") if isinstance(fmt, dict) else fmt
    output: dict[str, Any]
    if kind in ("json_object", "json_schema"):
        content = json.dumps({"answer": "emulated", "words": len(_words(last))})
    else:
        content = f"Emulated answer to: {last[:200]}"
    prompt_tokens, completion_tokens = len(_words(last)) + 1, len(_words(content)) + 1
    output = {
        "id": f"chatcmpl-{digest[:24]}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": _text(data.get("model")) or "gpt-4o-mini",
        "choices": [{"index": 0, "finishReason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"promptTokens": prompt_tokens, "completionTokens": completion_tokens,
                  "totalTokens": prompt_tokens + completion_tokens},
    }
    return Rendered(output)


_TAGS = ["1girl", "solo", "outdoors", "sky", "cloud", "city", "night", "tree", "water",
         "building", "smile", "long_hair", "landscape", "scenery", "no_humans", "sunset"]


def _tagging(data: dict[str, Any], fetch: Fetch) -> Rendered:
    source = load_source(data.get("mediaUrl"), fetch)
    digest = hashlib.sha256(source).digest()
    threshold = _num(data.get("threshold"), 0.35)
    tags = {}
    for index, tag in enumerate(_TAGS):
        score = round(digest[index] / 255, 4)
        if score >= threshold:
            tags[tag] = score
    rating = {"general": 0.97, "sensitive": 0.02, "questionable": 0.005, "explicit": 0.001}
    return Rendered({"tags": tags, "rating": rating})


def render(step_type: str, data: dict[str, Any], jobs: list[str], fetch: Fetch) -> Rendered:
    """Produce the output of one step, or raise StepFailure."""
    try:
        if step_type in ("imageGen", "textToImage"):
            return _images(step_type, data, jobs, fetch)
        if step_type == "imageUpscaler":
            return _upscale(data, jobs, fetch)
        if step_type == "convertImage":
            return _convert(data, jobs, fetch)
        if step_type == "imageBackgroundRemoval":
            return _cutout(data, jobs, fetch)
        if step_type == "videoGen":
            return _video(data, jobs, fetch)
        if step_type == "echo":
            return Rendered({"message": _text(data.get("message"))})
        if step_type == "promptEnhancement":
            return _enhance(data)
        if step_type == "chatCompletion":
            return _chat(data)
        if step_type == "wdTagging":
            return _tagging(data, fetch)
        if step_type in catalog.known_types():
            # No bespoke simulation: an output of the catalogued shape, placeholder blobs.
            output, blobs = _generic.render(step_type, data, jobs, _seed(data))
            return Rendered(output, blobs)
    except ValueError as exc:  # unreadable source bytes
        raise StepFailure(str(exc)) from exc
    # A type the catalog does not know: no worker takes it.
    raise StepFailure("no_provider_available")

