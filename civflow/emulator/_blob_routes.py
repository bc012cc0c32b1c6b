"""Blob routes: signed GET → 308 → content, HEAD, refresh, presigned and direct upload."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from civflow.emulator import _media
from civflow.emulator._blobs import EXTENSIONS, BlobInfo
from civflow.emulator._engine import Engine
from civflow.emulator._http import base_url, bearer_ok, problem
from civflow.emulator._ids import blob_id, iso

_UPLOAD_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif",
                           "video/mp4", "video/webm"})
_UPLOAD_URL_LIFETIME = 3600


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _authorize(request: Request, blob: str) -> Response | None:
    """A signed URL (`sig`+`exp`) or a bearer token; a bad signature is a 403."""
    engine = _engine(request)
    sig, exp = request.query_params.get("sig"), request.query_params.get("exp")
    if sig is not None or exp is not None:
        why = engine.blobs.check_signature(blob, sig or "", exp or "")
        return problem(403, why) if why else None
    return None if bearer_ok(request, engine) else problem(401)


async def get_blob(request: Request) -> Response:
    blob = request.path_params["blob_id"]
    denied = _authorize(request, blob)
    if denied is not None:
        return denied
    engine = _engine(request)
    if blob not in engine.blobs:
        return problem(404, "The blob was not found.")
    token = engine.blobs.content_token(blob, engine.config.url_lifetime_seconds)
    query = {k: v for k, v in request.query_params.items() if k in ("filename", "download")}
    target = f"{base_url(request)}/v2/consumer/blobs/content/{token}"
    if query:
        target += "?" + urlencode(query)
    return RedirectResponse(target, status_code=308, headers={"x-nsfw-level": "pg"})


async def head_blob(request: Request) -> Response:
    blob = request.path_params["blob_id"]
    denied = _authorize(request, blob)
    if denied is not None:
        return Response(status_code=denied.status_code)
    if blob not in _engine(request).blobs:
        return Response(status_code=404)
    return Response(status_code=204, headers={"x-nsfw-level": "pg"})


async def blob_content(request: Request) -> Response:
    engine = _engine(request)
    blob = engine.blobs.open_token(request.path_params["token"])
    if blob is None:
        return problem(403, "The content token is invalid or has expired.")
    info, data = engine.blobs.info(blob), engine.blobs.data(blob)
    if info is None or data is None:
        return problem(404, "The blob was not found.")
    disposition = "attachment" if request.query_params.get("download") == "true" else "inline"
    filename = request.query_params.get("filename") or info.id
    filename = "".join(c for c in filename.rsplit("/", 1)[-1] if c.isprintable() and c != '"')
    return Response(data, media_type=info.content_type, headers={
        "Cache-Control": "public, max-age=86400, immutable",
        "Content-Disposition": f'{disposition}; filename="{filename}"',
        "x-nsfw-level": "pg",
    })


async def refresh_blob(request: Request) -> Response:
    engine = _engine(request)
    if not bearer_ok(request, engine):
        return problem(401)
    blob = request.path_params["blob_id"]
    if blob not in engine.blobs:
        return problem(404, "The blob was not found.")
    return JSONResponse(engine.views.blob_json(blob, base_url(request)))


async def upload_url(request: Request) -> Response:
    engine = _engine(request)
    if not bearer_ok(request, engine):
        return problem(401)
    exp = int(time.time() + _UPLOAD_URL_LIFETIME)
    query = urlencode({"sig": engine.blobs.upload_signature(exp), "exp": exp})
    return JSONResponse({"uploadUrl": f"{base_url(request)}/v2/consumer/blobs?{query}",
                         "expiresAt": iso(exp)})


def _upload_authorized(request: Request, engine: Engine) -> bool:
    sig, exp = request.query_params.get("sig"), request.query_params.get("exp")
    if sig is not None and exp is not None and exp.isdigit():
        return sig == engine.blobs.upload_signature(int(exp)) and int(exp) >= time.time()
    return bearer_ok(request, engine)


async def upload_blob(request: Request) -> Response:
    engine = _engine(request)
    if not _upload_authorized(request, engine):
        return problem(401)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in _UPLOAD_TYPES:
        return problem(415, f"Content type '{content_type or 'none'}' cannot be uploaded; "
                       "use jpeg, png, webp, gif, mp4 or webm.")
    declared = request.headers.get("content-length")
    limit = engine.config.max_upload_bytes
    if declared and declared.isdigit() and int(declared) > limit:
        return problem(413, f"Uploads are limited to {limit} bytes.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return problem(413, f"Uploads are limited to {limit} bytes.")
        chunks.append(chunk)
    data = b"".join(chunks)
    if not data:
        return problem(400, "The upload is empty.")
    width = height = None
    kind = "video" if content_type.startswith("video/") else "image"
    if kind == "image":
        try:
            picture = _media.decode(data)
        except ValueError:
            return problem(422, "The bytes are not a readable image of the declared type.")
        width, height = picture.width, picture.height
    info = BlobInfo(id=blob_id(EXTENSIONS[content_type]), content_type=content_type,
                    kind=kind, size=len(data), width=width, height=height)
    engine.blobs.put(info, data)
    return JSONResponse(engine.views.blob_json(info.id, base_url(request)), 201)


def routes(prefix: str) -> list[Route]:
    blob = f"{prefix}/blobs/{{blob_id}}"
    return [
        Route(f"{prefix}/blobs/upload", upload_url, methods=["GET"]),
        Route(f"{prefix}/blobs/content/{{token}}", blob_content, methods=["GET"]),
        Route(f"{prefix}/blobs", upload_blob, methods=["POST"]),
        # HEAD first: a GET route also answers HEAD in Starlette.
        Route(blob, head_blob, methods=["HEAD"]),
        Route(blob, get_blob, methods=["GET"]),
        Route(f"{blob}/refresh", refresh_blob, methods=["POST"]),
    ]
