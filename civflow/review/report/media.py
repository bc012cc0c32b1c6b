"""Originals and thumbnails of a report: copied and encoded once, named by sha256, verified.

A report folder holds `files/<sha256>.<ext>` (the original bytes, copied so the folder
works on its own as a CI artifact) and `thumbs/<sha256>.webp` (at most 256 px, made
once with Pillow; a video's poster is its first frame, decoded with PyAV). Names come
from the artifact's sha256 and a fixed list of extensions, never from a pipeline file
or a server. Bytes are taken from the local object store or from the pipeline's own
`out/` folder, hashed on the way in, and used only when they hash to the name; a file
already in the report folder with the recorded size is trusted, so a second report
reads and encodes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from civflow.errors import FileAccessError
from civflow.names import safe_extension
from civflow.store.atomic import atomic_write_bytes
from civflow.store.lockfile import Artifact
from civflow.store.objects import ObjectStore

__all__ = ["PUBLISHED", "Media", "MediaCounts", "MediaFolder", "kind_of"]

THUMB_PX = 256
MAX_WORKERS = 4  # threads copying and encoding at once
_CHUNK = 1024 * 1024
# Decoding a picture larger than this many pixels for a 256 px thumbnail is refused.
MAX_PIXELS = 64_000_000
_EXTENSIONS = {
    "image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif",
    "image/avif": "avif", "video/mp4": "mp4", "video/webm": "webm",
    "video/quicktime": "mov", "audio/mpeg": "mp3", "audio/wav": "wav",
    "application/json": "json", "text/plain": "txt",
}
_IMAGE_SUFFIXES = {"jpg", "jpeg", "png", "webp", "gif", "avif", "bmp"}
_VIDEO_SUFFIXES = {"mp4", "webm", "mov", "mkv"}
# The only suffixes a report publishes: media a browser shows inertly, and plain data.
# Anything else (html, svg, js, xml, pdf, ...) whoever chose its bytes could make run
# script when opened from the page, so it is published as `.bin`, a download.
PUBLISHED = frozenset({*_IMAGE_SUFFIXES, *_VIDEO_SUFFIXES, "mp3", "wav", "json", "txt"})


def _suffix(artifact: Artifact) -> str:
    """The published file's suffix: from the media type when it is one of the known
    kinds, else from the recorded path when that is in PUBLISHED, else `bin`."""
    known = _EXTENSIONS.get((artifact.media_type or "").split(";")[0].strip().lower())
    if known:
        return known
    recorded = safe_extension(Path(artifact.path).suffix.lstrip("."))
    return recorded if recorded in PUBLISHED else "bin"


def kind_of(artifact: Artifact) -> str:
    """"image", "video" or "file", from the suffix the report publishes it under, so
    an `image/svg+xml` (active content) is a file, never a picture."""
    suffix = _suffix(artifact)
    if suffix in _IMAGE_SUFFIXES:
        return "image"
    if suffix in _VIDEO_SUFFIXES:
        return "video"
    return "file"


@dataclass(frozen=True)
class Media:
    """One artifact as the page shows it: relative links into the report folder."""

    artifact: Artifact
    kind: str
    original: str | None  # "files/<sha>.<ext>", None when the bytes were not found
    thumb: str | None  # "thumbs/<sha>.webp", None when none could be made
    thumb_size: tuple[int, int] | None = None
    missing: str | None = None  # why the original is not in the report

    @property
    def available(self) -> bool:
        return self.original is not None


@dataclass
class MediaCounts:
    """What one report did with the files: copied and encoded now, or found done."""

    copied: int = 0
    encoded: int = 0
    reused: int = 0
    unavailable: int = 0
    bytes_copied: int = 0
    damaged: list[str] = field(default_factory=list)  # sources whose bytes did not match


@dataclass(frozen=True)
class Source:
    """Where the bytes of an artifact may be found: the project's store and out/ folder."""

    store: ObjectStore
    out_root: Path  # `<project>/out`: a lockfile path is read only when it lies below
    lock_dir: Path

    def candidates(self, artifact: Artifact) -> Iterable[Path]:
        yield self.store.path_for(artifact.sha256)
        path = self.lock_dir / artifact.path
        try:
            real = Path(os.path.realpath(path))
            root = Path(os.path.realpath(self.out_root))
        except (OSError, ValueError):
            return
        if real != root and real.is_relative_to(root):
            yield real


class MediaFolder:
    """The `files/` and `thumbs/` folders of one report."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.files = self.root / "files"
        self.thumbs = self.root / "thumbs"
        self.counts = MediaCounts()
        self._done: dict[str, Media] = {}
        self._lock = threading.Lock()

    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self.counts, name, getattr(self.counts, name) + amount)

    def prepare(self, wanted: Iterable[tuple[Artifact, Source]]) -> None:
        """Copy and encode every artifact not done yet, a few at a time: Pillow and the
        file copies release the GIL, so the threads share the cores."""
        todo: dict[str, tuple[Artifact, list[Source]]] = {}
        for artifact, source in wanted:
            if artifact.sha256 not in self._done:
                sources = todo.setdefault(artifact.sha256, (artifact, []))[1]
                if source not in sources:
                    sources.append(source)
        workers = max(1, min(MAX_WORKERS, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for future in [pool.submit(self._media, a, s) for a, s in todo.values()]:
                future.result()

    def has(self, artifact: Artifact) -> bool:
        """Whether the report folder already holds this original (by name and size)."""
        return _size(self.files / f"{artifact.sha256}.{_suffix(artifact)}") == artifact.size

    def media(self, artifact: Artifact, source: Source) -> Media:
        """The artifact copied and thumbnailed into the report (once per sha256)."""
        done = self._done.get(artifact.sha256)
        if done is None:
            done = self._media(artifact, [source])
        return done if done.artifact == artifact else _same_bytes(done, artifact)

    def _media(self, artifact: Artifact, sources: list[Source]) -> Media:
        media = self._make(artifact, sources)
        self._done[artifact.sha256] = media
        return media

    def _make(self, artifact: Artifact, sources: list[Source]) -> Media:
        kind = kind_of(artifact)
        name = f"{artifact.sha256}.{_suffix(artifact)}"
        original = self.files / name
        thumb = self.thumbs / f"{artifact.sha256}.webp"
        no_thumb = self.thumbs / f"{artifact.sha256}.none"
        wants_thumb = kind in ("image", "video")
        copied = _size(original) == artifact.size
        if copied and (not wants_thumb or thumb.is_file() or no_thumb.is_file()):
            self._count("reused")
            return Media(artifact, kind, f"files/{name}",
                         f"thumbs/{thumb.name}" if thumb.is_file() else None,
                         _thumb_size(artifact, thumb))
        if not copied and not self._copy(artifact, sources, original):
            self._count("unavailable")
            return Media(artifact, kind, None, None, missing=(
                "not in the local store or out/ (nor pulled from a remote)"))
        made = _encode(original, kind) if wants_thumb else None
        if made is not None:
            atomic_write_bytes(thumb, made)
            self._count("encoded")
        elif wants_thumb and THUMBNAILS:  # a file Pillow and PyAV cannot decode
            atomic_write_bytes(no_thumb, b"")
        return Media(artifact, kind, f"files/{name}",
                     f"thumbs/{thumb.name}" if made is not None else None,
                     _thumb_size(artifact, thumb) if made is not None else None)

    def _copy(self, artifact: Artifact, sources: list[Source], dest: Path) -> bool:
        """Copy the first candidate whose bytes hash to the artifact's sha256."""
        tried: set[Path] = set()
        for candidate in (c for s in sources for c in s.candidates(artifact)):
            if candidate in tried or not candidate.is_file():
                continue
            tried.add(candidate)
            written = _copy_verified(candidate, dest, artifact.sha256)
            if written is None:
                with self._lock:
                    self.counts.damaged.append(str(candidate))
                continue
            self._count("copied")
            self._count("bytes_copied", written)
            return True
        return False


def _same_bytes(done: Media, artifact: Artifact) -> Media:
    return Media(artifact, done.kind, done.original, done.thumb, done.thumb_size, done.missing)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _copy_verified(source: Path, dest: Path, sha256: str) -> int | None:
    """Copy `source` to `dest` atomically while hashing it; None (and nothing written)
    when the bytes do not hash to `sha256`."""
    digest = hashlib.sha256()
    size = 0
    tmp: str | None = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        if digest.hexdigest() != sha256:
            return None
        os.replace(tmp, dest)
        tmp = None
    except OSError as exc:
        raise FileAccessError(path=str(dest), reason=exc.strerror or str(exc)) from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return size


def _thumb_size(artifact: Artifact, thumb: Path) -> tuple[int, int] | None:
    """The thumbnail's size from the artifact's recorded size (no file is opened)."""
    if not artifact.width or not artifact.height or artifact.width <= 0 or artifact.height <= 0:
        return None
    scale = min(1.0, THUMB_PX / max(artifact.width, artifact.height))
    return max(1, round(artifact.width * scale)), max(1, round(artifact.height * scale))


def _can_encode() -> bool:
    """Whether this install has the report's media packages (civflow[report])."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("PIL", "av"))


THUMBNAILS = _can_encode()


def _encode(path: Path, kind: str) -> bytes | None:
    """A WebP thumbnail of an image, or of a video's first frame; None when the file
    cannot be decoded (the page then shows a placeholder) or this install has no
    Pillow (the page then shows the original picture)."""
    try:
        from PIL import Image
    except ImportError:  # civflow[report] is not installed
        return None
    try:
        if kind == "video":
            picture = _first_frame(path)
            if picture is None:
                return None
        else:
            picture = Image.open(path)
            if picture.width * picture.height > MAX_PIXELS:
                return None
            picture.draft("RGB", (THUMB_PX, THUMB_PX))  # JPEG: decode at 1/2…1/8 already
        picture.thumbnail((THUMB_PX, THUMB_PX))
        mode = "RGBA" if picture.mode in ("RGBA", "LA", "P", "PA") else "RGB"
        buffer = io.BytesIO()
        picture.convert(mode).save(buffer, format="WEBP", quality=72, method=1)
        return buffer.getvalue()
    except Exception:  # Pillow and PyAV raise many kinds for a bad file: no thumbnail
        return None


def _first_frame(path: Path) -> Any:
    try:
        import av
    except ImportError:  # civflow[report] is not installed
        return None

    with av.open(str(path)) as container:
        if not container.streams.video:
            return None
        for frame in container.decode(video=0):
            return frame.to_image()  # type: ignore[no-untyped-call]
    return None
