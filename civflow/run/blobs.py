"""Blob bookkeeping for a run: download outputs into the store, hand out valid URLs for inputs.

Inside civflow a blob is named by the sha256 of its content (a token in rendered
inputs), so cache keys never contain presigned URLs. Only at submission time is a
token replaced by a URL that is valid right then.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from civflow.backends.base import Backend
from civflow.errors import ApiNotFound, AuthenticationError
from civflow.plan import BLOB_TOKEN
from civflow.store.lockfile import Artifact
from civflow.store.objects import ObjectStore

_TOKEN = re.compile(re.escape(BLOB_TOKEN) + r"([0-9a-f]{64})")
# A URL that expires within this margin is refreshed before it is sent.
_MARGIN = timedelta(minutes=5)

_EXTENSIONS = {"image/jpeg": "jpeg", "image/png": "png", "image/webp": "webp",
               "image/gif": "gif", "video/mp4": "mp4", "video/webm": "webm",
               "video/x-msvideo": "avi", "application/json": "json", "text/plain": "txt"}


@dataclass
class _Known:
    blob_id: str
    url: str | None
    expires: datetime | None


def _parse_time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def find_blobs(output: Any) -> list[Mapping[str, Any]]:
    """Every blob object (a mapping with an `id` and a `url` or `available`) in an output."""
    found: list[Mapping[str, Any]] = []
    stack = [output]
    while stack:
        value = stack.pop()
        if isinstance(value, Mapping):
            if isinstance(value.get("id"), str) and ("url" in value or "available" in value):
                found.append(value)
            else:
                stack.extend(reversed(list(value.values())))
        elif isinstance(value, list):
            stack.extend(reversed(value))
    return found


def extension_for(blob: Mapping[str, Any], media_type: str | None) -> str:
    blob_id = str(blob.get("id", ""))
    if "." in blob_id:
        return blob_id.rsplit(".", 1)[1].lower()
    if media_type:
        known = _EXTENSIONS.get(media_type.split(";")[0].strip())
        if known:
            return known
        guessed = mimetypes.guess_extension(media_type.split(";")[0].strip())
        if guessed:
            return guessed.lstrip(".")
    return "bin"


class BlobBook:
    """Which blob ids hold which content, and URLs for them that are valid now."""

    def __init__(self, backend: Backend, store: ObjectStore) -> None:
        self.backend = backend
        self.store = store
        self._by_sha: dict[str, _Known] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.refreshes = 0
        self.uploads = 0

    def learn(self, sha256: str, blob_id: str, url: str | None = None,
              expires: datetime | None = None) -> None:
        known = self._by_sha.get(sha256)
        if known is None or url is not None:
            self._by_sha[sha256] = _Known(blob_id, url, expires)

    def learn_artifacts(self, artifacts: tuple[Artifact, ...]) -> None:
        for artifact in artifacts:
            self.learn(artifact.sha256, artifact.blob_id)

    async def url_for(self, sha256: str, now: datetime) -> str:
        lock = self._locks.setdefault(sha256, asyncio.Lock())
        async with lock:
            known = self._by_sha.get(sha256)
            if known and known.url and known.expires and known.expires - _MARGIN > now:
                return known.url
            if known is not None:
                try:
                    blob = await self.backend.refresh_blob(known.blob_id)
                    self.refreshes += 1
                    url = blob.get("url")
                    if isinstance(url, str):
                        expires = _parse_time(blob.get("urlExpiresAt"))
                        self.learn(sha256, known.blob_id, url, expires)
                        return url
                except ApiNotFound:
                    pass  # gone from Civitai: upload our own copy below
            return await self._upload(sha256)

    async def _upload(self, sha256: str) -> str:
        path = self.store.path_for(sha256)
        media_type = _sniff(path)
        blob = await self.backend.upload_blob(path, media_type)
        self.uploads += 1
        url, blob_id = blob.get("url"), blob.get("id")
        if not isinstance(url, str) or not isinstance(blob_id, str):
            raise ApiNotFound("the upload answer carried no blob url")
        self.learn(sha256, blob_id, url, _parse_time(blob.get("urlExpiresAt")))
        return url

    async def substitute(self, value: Any, now: datetime) -> Any:
        """Replace every content token in `value` by a URL valid at `now`."""
        if isinstance(value, str):
            if BLOB_TOKEN not in value:
                return value
            parts: list[str] = []
            last = 0
            for match in _TOKEN.finditer(value):
                parts.append(value[last:match.start()])
                parts.append(await self.url_for(match.group(1), now))
                last = match.end()
            parts.append(value[last:])
            return "".join(parts)
        if isinstance(value, Mapping):
            return {k: await self.substitute(v, now) for k, v in value.items()}
        if isinstance(value, list):
            return [await self.substitute(v, now) for v in value]
        return value

    async def download_all(self, output: Mapping[str, Any], dest_dir: Path, lock_dir: Path
                           ) -> tuple[Artifact, ...]:
        """Download every blob of an output into the store and link it as dest_dir/<n>.<ext>."""
        artifacts: list[Artifact] = []
        for n, blob in enumerate(find_blobs(output)):
            url = blob.get("url")
            if not isinstance(url, str):
                continue  # not available (blocked or hidden): nothing to keep
            download = await self._download(blob, url)
            ext = extension_for(blob, download.media_type)
            dest = dest_dir / f"{n}.{ext}"
            self.store.link(download.sha256, dest)
            self.learn(download.sha256, str(blob["id"]), url, _parse_time(blob.get("urlExpiresAt")))
            width, height = blob.get("width"), blob.get("height")
            artifacts.append(Artifact(
                blob_id=str(blob["id"]), sha256=download.sha256, size=download.size,
                media_type=download.media_type,
                width=width if isinstance(width, int) else None,
                height=height if isinstance(height, int) else None,
                path=Path(_relative(dest, lock_dir)).as_posix()))
        return tuple(artifacts)

    async def _download(self, blob: Mapping[str, Any], url: str) -> Any:
        tmp = self.store.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        target = tmp / f"{blob['id']}.part"
        try:
            download = await self.backend.download(url, target)
        except AuthenticationError:
            # An expired signature: ask for a fresh URL once, then try again.
            fresh = await self.backend.refresh_blob(str(blob["id"]))
            self.refreshes += 1
            download = await self.backend.download(str(fresh["url"]), target)
        self.store.adopt(download.path, download.sha256)
        return download


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return os.path.relpath(path.resolve(), base.resolve())


def _sniff(path: Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(16)
    if head.startswith(b"\x89PNG"):
        return "image/png"
    if head.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video/x-msvideo"
    if head[4:8] == b"ftyp":
        return "video/mp4"
    if head.startswith(b"GIF8"):
        return "image/gif"
    return "application/octet-stream"
