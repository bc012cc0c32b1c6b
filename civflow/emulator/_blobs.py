"""The emulator's blob store: bytes by id, signed expiring URLs, optional files on disk."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlencode

from civflow.emulator._ids import iso

CONTENT_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "mp4": "video/mp4",
    "webm": "video/webm",
    "avi": "video/x-msvideo",
    "wav": "audio/wav",
    "glb": "model/gltf-binary",
}
EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/webp": "webp",
    "image/gif": "gif",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/x-msvideo": "avi",
    "audio/wav": "wav",
    "model/gltf-binary": "glb",
}


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """What is known about one stored blob besides its bytes."""

    id: str
    content_type: str
    kind: str  # "image", "video", "audio" or "model3d": the Blob `type` discriminator
    size: int
    width: int | None = None
    height: int | None = None
    job_id: str | None = None


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and rename, so no half file survives."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class BlobStore:
    """Blobs in memory (and in `state_dir/blobs` when persistent), with HMAC-signed URLs."""

    def __init__(self, state_dir: Path | None) -> None:
        self._dir = state_dir / "blobs" if state_dir else None
        self._infos: dict[str, BlobInfo] = {}
        self._data: dict[str, bytes] = {}
        self._secret = self._load_secret(state_dir)
        if self._dir and self._dir.is_dir():
            for meta in self._dir.glob("*.json"):
                info = BlobInfo(**json.loads(meta.read_text()))
                if (self._dir / info.id).is_file():
                    self._infos[info.id] = info

    @staticmethod
    def _load_secret(state_dir: Path | None) -> bytes:
        if state_dir is None:
            return secrets.token_bytes(32)
        path = state_dir / "secret"
        if path.is_file():
            return bytes.fromhex(path.read_text().strip())
        secret = secrets.token_bytes(32)
        write_atomic(path, secret.hex().encode())
        return secret

    def __contains__(self, blob_id: str) -> bool:
        return blob_id in self._infos

    def __len__(self) -> int:
        return len(self._infos)

    def put(self, info: BlobInfo, data: bytes) -> None:
        self._infos[info.id] = info
        if self._dir is None:
            self._data[info.id] = data
            return
        write_atomic(self._dir / info.id, data)
        write_atomic(self._dir / f"{info.id}.json", json.dumps(asdict(info)).encode())

    def info(self, blob_id: str) -> BlobInfo | None:
        return self._infos.get(blob_id)

    def data(self, blob_id: str) -> bytes | None:
        if blob_id not in self._infos:
            return None
        if self._dir is None:
            return self._data[blob_id]
        return (self._dir / blob_id).read_bytes()

    def forget(self, blob_id: str) -> bool:
        info = self._infos.pop(blob_id, None)
        self._data.pop(blob_id, None)
        if info is not None and self._dir is not None:
            (self._dir / blob_id).unlink(missing_ok=True)
            (self._dir / f"{blob_id}.json").unlink(missing_ok=True)
        return info is not None

    def clear(self) -> None:
        for blob_id in list(self._infos):
            self.forget(blob_id)

    # -- signatures -------------------------------------------------------------------

    def rotate_secret(self) -> None:
        """Invalidate every URL issued so far: their signatures no longer verify."""
        self._secret = secrets.token_bytes(32)
        if self._dir is not None:
            write_atomic(self._dir.parent / "secret", self._secret.hex().encode())

    def _sign(self, message: str) -> str:
        digest = hmac.new(self._secret, message.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()

    def signed_url(self, base: str, blob_id: str, lifetime: float) -> tuple[str, str]:
        """A `{base}/v2/consumer/blobs/{id}?sig=…&exp=…` URL and its expiry timestamp."""
        exp = int(time.time() + lifetime)
        query = urlencode({"sig": self._sign(f"{blob_id}:{exp}"), "exp": exp})
        return f"{base}/v2/consumer/blobs/{blob_id}?{query}", iso(exp)

    def check_signature(self, blob_id: str, sig: str, exp: str) -> str | None:
        """None when valid, else why not."""
        if not exp.isdigit():
            return "The signature expiry is malformed."
        if not hmac.compare_digest(sig, self._sign(f"{blob_id}:{exp}")):
            return "The signature is not valid."
        if int(exp) < time.time():
            return "The signed URL has expired."
        return None

    def content_token(self, blob_id: str, lifetime: float) -> str:
        """An opaque, signed token for the content URL a blob GET redirects to."""
        exp = int(time.time() + lifetime)
        body = f"{blob_id}:{exp}"
        raw = f"{body}:{self._sign('content:' + body)}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def open_token(self, token: str) -> str | None:
        """The blob id of a valid, unexpired content token, else None."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        blob_id, _, rest = raw.partition(":")
        exp, _, sig = rest.partition(":")
        if not exp.isdigit() or not hmac.compare_digest(
            sig, self._sign(f"content:{blob_id}:{exp}")
        ):
            return None
        return blob_id if int(exp) >= time.time() else None

    def upload_signature(self, exp: int) -> str:
        return self._sign(f"upload:{exp}")
