"""Deterministic pictures and videos: the same step input always gives the same bytes.

Everything here is a pure function of its arguments (no clock, no global RNG), so two
emulator instances render byte-identical files; the seed drives colours and shapes so
two seeds are told apart at a glance, and the prompt and seed are printed on the image.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import struct
import textwrap
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

# Output format names used by the API → Pillow format and our file extension.
_FORMATS = {
    "png": ("PNG", "png"),
    "jpeg": ("JPEG", "jpeg"),
    "jpg": ("JPEG", "jpeg"),
    "webp": ("WEBP", "webp"),
    "gif": ("GIF", "gif"),
}


def normalize_format(name: object, default: str = "png") -> str:
    """`webP`, `JPEG`, … → one of png/jpeg/webp/gif."""
    text = str(name).lower() if isinstance(name, str) else default
    return _FORMATS[text][1] if text in _FORMATS else default


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from a canonical JSON hash of the parts (dict order does not matter)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:8], "big") >> 1


def encode(image: Image.Image, fmt: str, *, quality: int | None = None,
           lossless: bool = False) -> bytes:
    """Encode without any varying metadata so equal pixels give equal bytes."""
    pil_format, _ = _FORMATS[fmt]
    out = io.BytesIO()
    if pil_format == "JPEG":
        image.convert("RGB").save(out, "JPEG", quality=quality or 90)
    elif pil_format == "WEBP":
        image.save(out, "WEBP", quality=quality or 85, lossless=lossless, method=4)
    elif pil_format == "GIF":
        image.convert("P", palette=Image.Palette.ADAPTIVE).save(out, "GIF")
    else:
        image.save(out, "PNG", compress_level=6)
    return out.getvalue()


def decode(data: bytes) -> Image.Image:
    """Open image bytes; raises ValueError when they are not a picture."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable image: {exc}") from exc
    return image


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(size, 8))


def _palette(rng: random.Random) -> list[tuple[int, int, int]]:
    return [(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(6)]


def _scene(width: int, height: int, rng: random.Random) -> Image.Image:
    """A seed-dependent gradient with shapes: two seeds never look alike."""
    colours = _palette(rng)
    top, bottom = colours[0], colours[1]
    gradient = Image.linear_gradient("L").resize((width, height))
    image = Image.composite(Image.new("RGB", (width, height), bottom),
                            Image.new("RGB", (width, height), top), gradient)
    draw = ImageDraw.Draw(image, "RGBA")
    unit = min(width, height)
    for _ in range(rng.randint(5, 9)):
        colour = (*colours[rng.randrange(2, 6)], rng.randint(120, 220))
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randint(unit // 12, unit // 4)
        shape = rng.randrange(3)
        if shape == 0:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        elif shape == 1:
            draw.rectangle((x - r, y - r // 2, x + r, y + r // 2), fill=colour)
        else:
            points = [(x + rng.randint(-r, r), y + rng.randint(-r, r)) for _ in range(3)]
            draw.polygon(points, fill=colour)
    return image


def _caption(image: Image.Image, lines: Sequence[str], title: str) -> None:
    """Print the prompt (wrapped) and a title line on a dark panel at the bottom."""
    width, height = image.size
    size = max(width // 32, 10)
    font, big = _font(size), _font(int(size * 1.6))
    chars = max(int(width / (size * 0.55)), 10)
    wrapped: list[str] = []
    for line in lines:
        wrapped.extend(textwrap.wrap(line, chars) or [""])
    wrapped = wrapped[: max(2, (height // 2) // (size + 4))]
    panel_h = int(size * 2.2) + len(wrapped) * (size + 4) + size
    draw = ImageDraw.Draw(image, "RGBA")
    draw.rectangle((0, height - panel_h, width, height), fill=(0, 0, 0, 170))
    y = height - panel_h + size // 2
    draw.text((size, y), title, font=big, fill=(255, 255, 255, 255))
    y += int(size * 2.0)
    for line in wrapped:
        draw.text((size, y), line, font=font, fill=(235, 235, 235, 255))
        y += size + 4


def render_image(*, prompt: str, negative: str | None, seed: int, width: int, height: int,
                 label: str, fmt: str, salt: object = None,
                 extra: Sequence[str] = ()) -> bytes:
    """A text-to-image result: a seeded scene with the prompt and seed written on it;
    `salt` (the other inputs) changes the scene, `extra` lines are written too."""
    rng = random.Random(stable_seed(seed, salt))
    image = _scene(width, height, rng)
    lines = [prompt] + ([f"negative: {negative}"] if negative else []) + list(extra)
    _caption(image, lines, f"seed {seed}  {label}")
    return encode(image, fmt)


def render_variant(source: bytes, *, prompt: str, seed: int, strength: float,
                   width: int | None, height: int | None, label: str, fmt: str) -> bytes:
    """img2img: the source picture blended with a seeded scene by `strength` (0..1)."""
    base = decode(source).convert("RGB")
    size = (width or base.width, height or base.height)
    base = base.resize(size, Image.Resampling.LANCZOS)
    overlay = _scene(size[0], size[1], random.Random(stable_seed(seed, "variant")))
    mixed = Image.blend(base, overlay, max(0.0, min(1.0, strength)) * 0.6)
    _caption(mixed, [prompt], f"variant  seed {seed}  {label}")
    return encode(mixed, fmt)


def upscale(source: bytes, *, repeats: int, fmt: str) -> tuple[bytes, int, int]:
    """Double the resolution once per repeat (LANCZOS, then a light sharpen)."""
    image = decode(source).convert("RGBA")
    factor = 2 ** max(repeats, 1)
    image = image.resize((image.width * factor, image.height * factor),
                         Image.Resampling.LANCZOS).filter(ImageFilter.SHARPEN)
    if fmt == "jpeg":
        image = image.convert("RGB")
    return encode(image, fmt), image.width, image.height


def remove_background(source: bytes, *, fmt: str) -> tuple[bytes, int, int]:
    """Make pixels close to the corner colour transparent: a crude but real cut-out."""
    image = decode(source).convert("RGBA")
    rgb = image.convert("RGB")
    corner = rgb.getpixel((0, 0))
    assert isinstance(corner, tuple)
    distance = ImageChops.difference(rgb, Image.new("RGB", rgb.size, corner)).convert("L")
    image.putalpha(distance.point(lambda v: 0 if v < 40 else 255))
    return encode(image, fmt if fmt in ("png", "webp") else "png"), image.width, image.height


def convert(source: bytes, *, fmt: str, target_width: int | None, quality: int | None,
            lossless: bool) -> tuple[bytes, int, int]:
    """Change format and optionally resize to a target width keeping the aspect ratio."""
    image = decode(source)
    image = image.convert("RGBA" if fmt in ("png", "webp") else "RGB")
    if target_width and target_width != image.width:
        height = max(1, round(image.height * target_width / image.width))
        image = image.resize((target_width, height), Image.Resampling.LANCZOS)
    return encode(image, fmt, quality=quality, lossless=lossless), image.width, image.height


def video_frames(*, source: bytes | None, prompt: str, seed: int, width: int, height: int,
                 count: int) -> list[Image.Image]:
    """A slow zoom over the source picture (or a seeded scene), captioned with the prompt."""
    if source is not None:
        base = decode(source).convert("RGB")
    else:
        base = _scene(width, height, random.Random(stable_seed(seed, "video")))
    base = base.resize((width, height), Image.Resampling.LANCZOS)
    frames = []
    for i in range(count):
        zoom = 1 + 0.25 * i / max(count - 1, 1)
        w, h = int(width / zoom), int(height / zoom)
        left, top = (width - w) // 2, (height - h) // 2
        frame = base.crop((left, top, left + w, top + h)).resize((width, height))
        _caption(frame, [prompt], f"seed {seed}  frame {i + 1}/{count}")
        frames.append(frame)
    return frames


def encode_video(frames: Sequence[Image.Image], fps: int) -> tuple[bytes, str]:
    """MP4 (H.264) when PyAV is installed, else a hand-written MJPEG AVI; both play anywhere."""
    try:
        return _encode_mp4(frames, fps), "mp4"
    except ImportError:
        return _encode_avi(frames, fps), "avi"


def _encode_mp4(frames: Sequence[Image.Image], fps: int) -> bytes:
    import av  # optional: the AVI writer below covers machines without it

    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        # One thread, explicit timestamps and a constant quantizer: x264's default CRF
        # rate control gave different bytes from run to run when called from worker
        # threads (measured), constant QP is bit-exact.
        stream: Any = container.add_stream("libx264", rate=fps, options={
            "preset": "veryfast", "threads": "1", "qp": "23"})
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.thread_type = "NONE"
        stream.time_base = Fraction(1, fps)
        for index, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_image(frame)  # type: ignore[no-untyped-call]
            video_frame = video_frame.reformat(format="yuv420p")
            video_frame.pts = index
            video_frame.time_base = Fraction(1, fps)
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def _chunk(tag: bytes, payload: bytes) -> bytes:
    pad = b"\0" if len(payload) % 2 else b""
    return tag + struct.pack("<I", len(payload)) + payload + pad


def _encode_avi(frames: Sequence[Image.Image], fps: int) -> bytes:
    """A minimal RIFF AVI with one MJPEG stream and an idx1 index."""
    width, height = frames[0].size
    jpegs = []
    for frame in frames:
        buf = io.BytesIO()
        frame.convert("RGB").save(buf, "JPEG", quality=85)
        jpegs.append(buf.getvalue())
    biggest = max(len(j) for j in jpegs)
    avih = struct.pack("<14I", 1_000_000 // fps, biggest * fps, 0, 0x10, len(frames), 0, 1,
                       biggest, width, height, 0, 0, 0, 0)
    strh = (b"vidsMJPG" + struct.pack("<IHHIIIIIIIII", 0, 0, 0, 0, 1, fps, 0, len(frames),
                                      biggest, 0xFFFFFFFF, 0, 0)
            + struct.pack("<4h", 0, 0, width, height))
    strf = struct.pack("<IiiHH4sIiiII", 40, width, height, 1, 24, b"MJPG", width * height * 3,
                       0, 0, 0, 0)
    strl = b"LIST" + struct.pack("<I", 4 + len(_chunk(b"strh", strh)) + len(
        _chunk(b"strf", strf))) + b"strl" + _chunk(b"strh", strh) + _chunk(b"strf", strf)
    hdrl_body = b"hdrl" + _chunk(b"avih", avih) + strl
    hdrl = b"LIST" + struct.pack("<I", len(hdrl_body)) + hdrl_body
    movi_body = b"movi"
    index = b""
    for jpeg in jpegs:
        index += b"00dc" + struct.pack("<III", 0x10, len(movi_body), len(jpeg))
        movi_body += _chunk(b"00dc", jpeg)
    movi = b"LIST" + struct.pack("<I", len(movi_body)) + movi_body
    body = b"AVI " + hdrl + movi + _chunk(b"idx1", index)
    return b"RIFF" + struct.pack("<I", len(body)) + body
