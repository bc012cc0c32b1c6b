"""Blob bookkeeping for a run: download outputs into the store, hand out valid URLs for inputs.

Inside civflow a blob is named by the sha256 of its content (a token in rendered
inputs), so cache keys never contain presigned URLs. Only at submission time is a
token replaced by a URL that is valid right then.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from civflow.client.base import Backend, Download
from civflow.errors import (
    ApiNotFound,
    ApiProtocolError,
    AuthenticationError,
    RemoteError,
    UnsafePath,
)
from civflow.names import blob_id_ok, check_blob_id, contained, safe_dirname, safe_extension
from civflow.remote.index import index_for
from civflow.request import BLOB_TOKEN
from civflow.store.integrity import (
    ArtifactState,
    ArtifactStatus,
    StatCache,
    check_artifact,
    restore_artifact,
)
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
    """The file extension for a blob: from its id, else its media type, else `bin`.

    Always 1-10 lowercase ASCII letters or digits, whatever the server sent.
    """
    blob_id = blob.get("id")
    if isinstance(blob_id, str) and "." in blob_id:
        from_id = safe_extension(blob_id.rsplit(".", 1)[1])
        if from_id:
            return from_id
    if media_type:
        kind = media_type.split(";")[0].strip().lower()
        known = _EXTENSIONS.get(kind)
        if known:
            return known
        guessed = safe_extension((mimetypes.guess_extension(kind) or "").lstrip("."))
        if guessed:
            return guessed
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
        """Remember that `blob_id` holds `sha256`; a malformed id (say from a hand-edited
        lockfile) is ignored, so it never reaches a request path: the content is
        uploaded afresh when it is needed."""
        if not blob_id_ok(blob_id):
            return
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

    async def download_all(self, output: Mapping[str, Any], dest_dir: Path | None = None,
                           lock_dir: Path | None = None, *, out_dir: Path | None = None,
                           instance: str | None = None, cache: StatCache | None = None
                           ) -> tuple[Artifact, ...]:
        """Download every blob of an output into the store and copy it to `<n>.<ext>`.

        Preferred call: `download_all(output, out_dir=<out>/<pipeline>, instance=name,
        lock_dir=...)`: the files go to `out_dir / safe_dirname(name)`, so a hostile or
        merely odd instance name can never leave `out_dir`. The older positional form
        `download_all(output, dest_dir, lock_dir)` still works but only guards against
        escaping `dest_dir` itself. Every blob id is checked before anything is written
        (ApiProtocolError otherwise); each file is checked to lie inside its folder
        (UnsafePath). `cache`, when given, learns the hashes of the files written; else
        the project's stat cache beside the store is updated and saved.
        """
        if lock_dir is None:
            raise TypeError("download_all needs lock_dir")
        given = out_dir if instance is not None else dest_dir
        if given is None:
            raise TypeError("download_all needs out_dir and instance")
        blobs = find_blobs(output)
        if not blobs:
            return ()  # a text or JSON output: no folder, no file, no stat cache
        base = Path(given)
        folder = base / safe_dirname(instance) if instance is not None else base
        for blob in blobs:  # refuse the whole answer before a single byte is written
            check_blob_id(blob.get("id"))
        own_cache = cache is None
        stats = cache if cache is not None else StatCache.for_store(self.store)
        artifacts: list[Artifact] = []
        for n, blob in enumerate(blobs):
            url = blob.get("url")
            if not isinstance(url, str):
                continue  # not available (blocked or hidden): nothing to keep
            blob_id = str(blob["id"])
            download = await self._download(blob_id, url)
            ext = extension_for(blob, download.media_type)
            dest = contained(base, folder / f"{n}.{ext}")
            await asyncio.to_thread(self.store.materialize, download.sha256, dest)
            stats.record(dest, download.sha256)
            stats.record(self.store.path_for(download.sha256), download.sha256)
            self.learn(download.sha256, blob_id, url, _parse_time(blob.get("urlExpiresAt")))
            width, height = blob.get("width"), blob.get("height")
            artifacts.append(Artifact(
                blob_id=blob_id, sha256=download.sha256, size=download.size,
                media_type=download.media_type,
                width=width if isinstance(width, int) else None,
                height=height if isinstance(height, int) else None,
                path=Path(_relative(dest, lock_dir)).as_posix()))
        if own_cache:
            stats.save()
        return tuple(artifacts)

    async def redownload(self, artifact: Artifact, *, lock_dir: Path, out_dir: Path,
                         cache: StatCache | None = None) -> ArtifactStatus:
        """Fetch a lost artifact again by its blob id, without submitting anything.

        Asks for a fresh URL (`backend.refresh_blob(blob_id)`), downloads to a temp file
        named at random, and adopts it only if its sha256 equals the recorded one; then
        the out/ file (`lock_dir / artifact.path`, which must lie inside `out_dir`) is
        restored from the store. Returns an OK status, or STORE_MISSING_OR_CORRUPT with
        the reason when the bytes differ (nothing adopted, the temp file removed).
        Raises ApiNotFound when Civitai no longer has the blob (the instance must run
        again), ApiProtocolError for a malformed blob id, UnsafePath for an out path
        outside `out_dir`, other ApiErrors as the backend raises them.
        """
        blob_id = check_blob_id(artifact.blob_id)
        out_path = contained(out_dir, lock_dir / artifact.path)
        own_cache = cache is None
        stats = cache if cache is not None else StatCache.for_store(self.store)
        try:
            if not await asyncio.to_thread(self.store.verify, artifact.sha256):
                self.store.quarantine(artifact.sha256)  # no-op when simply missing
                fresh = await self.backend.refresh_blob(blob_id)
                self.refreshes += 1
                url = fresh.get("url")
                if not isinstance(url, str):
                    raise ApiNotFound(f"blob {blob_id} has no URL any more (blocked or "
                                      "hidden)", status=404)
                download = await self._fetch(blob_id, url, adopt=False)
                if download.sha256 != artifact.sha256:
                    _discard(download.path)
                    return ArtifactStatus(
                        artifact, ArtifactState.STORE_MISSING_OR_CORRUPT, out_path,
                        f"blob {blob_id} now has sha256 {download.sha256}, not the "
                        f"recorded {artifact.sha256}; not adopted")
                try:
                    await asyncio.to_thread(self.store.adopt, download.path, download.sha256)
                finally:
                    _discard(download.path)  # already moved when adopted
                self.learn(artifact.sha256, blob_id, url,
                           _parse_time(fresh.get("urlExpiresAt")))
            stats.record(self.store.path_for(artifact.sha256), artifact.sha256)
            await asyncio.to_thread(self.store.materialize, artifact.sha256, out_path)
            stats.record(out_path, artifact.sha256)
        finally:
            if own_cache:
                stats.save()
        return ArtifactStatus(artifact, ArtifactState.OK, out_path)

    async def repair(self, statuses: Iterable[ArtifactStatus], *, lock_dir: Path,
                     out_dir: Path, cache: StatCache | None = None
                     ) -> tuple[ArtifactStatus, ...]:
        """Make every artifact of `statuses` whole again, locally first, then from the
        project's remote (verified pulls), downloading by blob id only what neither can
        give; never submits a workflow.

        The new statuses come back in order: all `ok` means the instance is cached. A
        blob Civitai forgot (ApiNotFound) or whose bytes changed stays
        STORE_MISSING_OR_CORRUPT with the reason in `detail`: that instance must run
        again. Other errors (network, UnsafePath) propagate.
        """
        own_cache = cache is None
        stats = cache if cache is not None else StatCache.for_store(self.store)
        done: list[ArtifactStatus] = []
        statuses = tuple(statuses)
        try:
            pulled = await self._pull_from_remote(
                {s.artifact.sha256 for s in statuses if s.needs_download})
            for status in statuses:
                if status.needs_download and status.artifact.sha256 in pulled:
                    status = check_artifact(status.artifact, lock_dir, self.store, stats)
                if status.restorable:
                    status = await asyncio.to_thread(restore_artifact, status, self.store,
                                                     stats, out_dir=out_dir)
                if status.needs_download:
                    try:
                        status = await self.redownload(status.artifact, lock_dir=lock_dir,
                                                       out_dir=out_dir, cache=stats)
                    except (ApiNotFound, ApiProtocolError) as exc:
                        status = ArtifactStatus(
                            status.artifact, ArtifactState.STORE_MISSING_OR_CORRUPT,
                            status.out_path, f"blob {status.artifact.blob_id!r} cannot be "
                            f"fetched again ({exc.message}); the instance must run again")
                done.append(status)
        finally:
            if own_cache:
                stats.save()
        return tuple(done)

    async def _pull_from_remote(self, shas: set[str]) -> set[str]:
        """Those of `shas` the project's remote had, now verified in the store; the rest
        (and everything, when the remote cannot be used) are left to the blob ids."""
        index = index_for(self.store) if shas else None
        if index is None:
            return set()
        try:
            done = await asyncio.to_thread(index.pull, self.store, shas)
        except RemoteError:
            return set()
        return set(done.done) | set(done.skipped)

    async def _download(self, blob_id: str, url: str) -> Download:
        return await self._fetch(blob_id, url, adopt=True)

    async def _fetch(self, blob_id: str, url: str, *, adopt: bool) -> Download:
        """Download to `<store>/tmp/<random>.part`: the name never comes from the server."""
        tmp = self.store.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        target = tmp / f"{secrets.token_hex(16)}.part"
        try:
            try:
                download = await self.backend.download(url, target)
            except AuthenticationError:
                # An expired signature: ask for a fresh URL once, then try again.
                fresh = await self.backend.refresh_blob(blob_id)
                self.refreshes += 1
                fresh_url = fresh.get("url")
                if not isinstance(fresh_url, str):
                    raise
                download = await self.backend.download(fresh_url, target)
            if download.path != target:
                raise UnsafePath(path=str(download.path), base=str(target))
            if adopt:
                await asyncio.to_thread(self.store.adopt, download.path, download.sha256)
        except BaseException:
            _discard(target)
            raise
        return download


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


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
