"""Media is real and deterministic: same input, same bytes, across separate emulators."""

from __future__ import annotations

import io
from typing import Any

import httpx
from PIL import Image

from civflow.emulator import EmulatorConfig, start_emulator
from civflow.emulator import _media as media
from tests.emulator.conftest import Api, image_step

VIDEO = {"$type": "videoGen", "name": "clip", "input": {
    "engine": "wan", "version": "v2.6", "provider": "fal", "operation": "image-to-video",
    "images": [{"$ref": "hero", "path": "output.images[0].url"}],
    "prompt": "the camera slowly pushes in", "resolution": "720p", "duration": 2,
    "cfgScale": 4}}


def _run_and_fetch(body: dict[str, Any]) -> list[bytes]:
    """Submit on a fresh emulator and download every blob of every step, in order."""
    with start_emulator(EmulatorConfig(time_scale=0)) as emu, \
            httpx.Client(base_url=emu.url, headers={"Authorization": "Bearer k"},
                         follow_redirects=True, timeout=60) as client:
        workflow = client.post("/v2/consumer/workflows", params={"wait": 60}, json=body).json()
        assert workflow["status"] == "succeeded", workflow
        out = []
        for step in workflow["steps"]:
            output = step["output"]
            blobs = output.get("images") or [output.get("blob") or output.get("image")
                                             or output.get("video")]
            out += [client.get(blob["url"]).content for blob in blobs]
        return out


def test_same_input_gives_identical_bytes_across_instances() -> None:
    body = {"steps": [
        image_step(size=192, quantity=2, fmt="png"),
        {"$type": "imageUpscaler", "input": {"image": {"$ref": "hero",
                                                       "path": "output.images[1].url"}}},
        {"$type": "convertImage", "input": {"image": {"$ref": "hero",
                                                      "path": "output.images[0].url"},
                                            "output": {"format": "webp", "quality": 80,
                                                       "hideMetadata": True}}},
        VIDEO,
    ]}
    first, second = _run_and_fetch(body), _run_and_fetch(body)
    assert len(first) == 5
    assert first == second
    assert first[0] != first[1]  # the two images of one batch use seed and seed+1


def test_different_seeds_differ_and_formats_are_honoured(api: Api) -> None:
    for fmt, pil_name in (("png", "PNG"), ("jpeg", "JPEG"), ("webP", "WEBP")):
        workflow = api.submit({"steps": [image_step(size=160, fmt=fmt, seed=1),
                                         image_step("other", size=160, fmt=fmt, seed=2)]})
        data = [api.client.get(s["output"]["images"][0]["url"], follow_redirects=True).content
                for s in workflow["steps"]]
        assert data[0] != data[1]
        pictures = [Image.open(io.BytesIO(d)) for d in data]
        assert {p.format for p in pictures} == {pil_name}
        assert all(p.size == (160, 160) for p in pictures)
        # Seeds change the colours, not just the caption.
        left = pictures[0].convert("RGB").getpixel((5, 5))
        right = pictures[1].convert("RGB").getpixel((5, 5))
        assert left != right


def test_video_is_playable_with_frames_from_the_source(api: Api) -> None:
    workflow = api.submit({"steps": [image_step(size=256), VIDEO]}, wait=60)
    video = workflow["steps"][1]["output"]["video"]
    assert video["type"] == "video" and video["width"] == 480 and video["height"] == 270
    data = api.client.get(video["url"], follow_redirects=True)
    assert data.headers["content-type"] in ("video/mp4", "video/x-msvideo")
    try:
        import av
    except ImportError:  # the AVI fallback: check the RIFF header and frame chunks
        assert data.content[:4] == b"RIFF" and data.content.count(b"00dc") >= 16
        return
    with av.open(io.BytesIO(data.content)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 16  # 2 s at 8 fps
    assert (frames[0].width, frames[0].height) == (480, 270)


def test_avi_fallback_is_a_valid_riff_file() -> None:
    frames = media.video_frames(source=None, prompt="p", seed=1, width=64, height=48, count=3)
    data = media._encode_avi(frames, 8)
    assert data[:4] == b"RIFF" and data[8:12] == b"AVI "
    assert int.from_bytes(data[4:8], "little") == len(data) - 8
    assert data.count(b"00dc") == 6  # three chunks, three index entries
    assert data == media._encode_avi(frames, 8)


def test_variant_derives_from_the_source_image(api: Api) -> None:
    hero = image_step(size=128, fmt="png")
    variant = {"$type": "imageGen", "input": {
        "engine": "sdcpp", "ecosystem": "sdxl", "operation": "createVariant",
        "model": "urn:air:sdxl:checkpoint:civitai:101055@128078", "prompt": "same, at dusk",
        "image": {"$ref": "hero", "path": "output.images[0].url"}, "strength": 0.3,
        "width": 128, "height": 128, "outputFormat": "png"}}
    workflow = api.submit({"steps": [hero, variant]})
    source, derived = (
        Image.open(io.BytesIO(api.client.get(s["output"]["images"][0]["url"],
                                             follow_redirects=True).content)).convert("RGB")
        for s in workflow["steps"])
    # With strength 0.3 the top-left pixel stays close to the source's.
    a, b = source.getpixel((2, 2)), derived.getpixel((2, 2))
    assert isinstance(a, tuple) and isinstance(b, tuple)
    assert sum(abs(x - y) for x, y in zip(a, b, strict=True)) < 3 * 80


def test_every_input_that_changes_a_real_picture_changes_this_one() -> None:
    """Issue 15: LoRA strengths 0.6 and 0.8 drew byte-identical images, so a sweep could
    not be judged on the emulator. Strengths (and cfg, steps, …) now change the scene,
    and the LoRAs are written on the picture."""
    pictures = []
    for strength in (0.6, 0.8):
        step = image_step(size=256, fmt="png")
        step["input"]["loras"] = {"urn:air:sdxl:lora:civitai:200000@250000": strength}
        (raw,) = _run_and_fetch({"steps": [step]})
        pictures.append(Image.open(io.BytesIO(raw)).convert("RGB"))
    stronger = image_step(size=256, fmt="png")
    stronger["input"]["cfgScale"] = 9
    (other_cfg,) = _run_and_fetch({"steps": [stronger]})
    first, second = pictures
    assert first.tobytes() != second.tobytes()
    # Visibly: the scenes differ in most pixels, not in a caption alone.
    a, b = first.tobytes(), second.tobytes()
    differing = sum(a[i:i + 3] != b[i:i + 3] for i in range(0, len(a), 3))
    assert differing > first.width * first.height // 2
    assert Image.open(io.BytesIO(other_cfg)).convert("RGB").tobytes() != first.tobytes()
