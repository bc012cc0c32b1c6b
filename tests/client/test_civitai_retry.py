"""CivitaiClient against a scripted flaky server: retries, error mapping, secrecy, downloads.

The scripted server is an ASGI app. Answers alone are tested in-process (the `world`
fixture: `httpx.ASGITransport` through the client's `transport` seam); what needs a
real connection (a drop, a body cut mid-stream, a second origin) is served by uvicorn
(the `served` and `elsewhere` fixtures).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import Receive, Scope, Send

from civflow.client.civitai import CivitaiClient
from civflow.errors import (
    ApiNotFound,
    ApiRejected,
    AuthenticationError,
    CivflowError,
    InsufficientFunds,
    RateLimited,
    ServiceUnavailable,
    UsageError,
)

# -- a scripted stand-in for the outside world (a flaky API, a CDN), served by uvicorn ----
#
# Each route answers from a script: a list of actions consumed one per request, the
# last one repeating. Actions: an int status, ("json", status, body, headers),
# ("text", status, body), ("bytes", status, body, media type), ("redirect", url), or
# "drop" (close the connection without an answer).


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeWorld:
    scripts: dict[str, list[Any]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    transport: httpx.AsyncBaseTransport | None = None  # in-process, when set

    def script(self, route: str, *actions: Any) -> None:
        """`route` is "METHOD /path"; the last action repeats forever."""
        self.scripts[route] = list(actions)

    def hits(self, route: str) -> int:
        method, path = route.split(" ", 1)
        return sum(1 for s in self.seen if s.method == method and s.path == path)

    def _next(self, route: str) -> Any:
        actions = self.scripts.get(route)
        if not actions:
            return ("json", 404, {"title": "Not Found", "status": 404}, {})
        return actions.pop(0) if len(actions) > 1 else actions[0]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        self.seen.append(Seen(request.method, request.url.path, request.url.query,
                              dict(request.headers), body))
        action = self._next(f"{request.method} {request.url.path}")
        if action == "drop" or (isinstance(action, tuple) and action[0] == "partial"):
            if action != "drop":  # promise a whole body, send a tenth of it, then die
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-length", str(len(action[1])).encode()),
                                        (b"content-type", b"image/png")]})
                await send({"type": "http.response.body", "body": action[1][:len(action[1]) // 10],
                            "more_body": True})
            # ASGI cannot drop a connection; reach uvicorn's transport, as a dying proxy would.
            transport = getattr(getattr(receive, "__self__", None), "transport", None)
            assert transport is not None
            transport.abort()
            for _ in range(3):
                await asyncio.sleep(0)
            return
        response: Response
        if isinstance(action, int):
            response = JSONResponse({"status": action, "title": "scripted"}, action)
        elif action[0] == "json":
            response = JSONResponse(action[2], action[1], headers=action[3])
        elif action[0] == "text":
            response = PlainTextResponse(action[2], action[1])
        elif action[0] == "bytes":
            response = Response(action[2], action[1], media_type=action[3])
        elif action[0] == "redirect":
            response = RedirectResponse(action[1], 308)
        else:
            raise AssertionError(f"unknown action {action!r}")
        await response(scope, receive, send)


@dataclass
class _Served:
    server: uvicorn.Server
    thread: threading.Thread


def _serve(app: FakeWorld) -> _Served:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="off",
                            ws="none", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the fake server did not start")
        threading.Event().wait(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    app.url = f"http://127.0.0.1:{port}"
    return _Served(server, thread)


def serve_fake(world: FakeWorld) -> Iterator[FakeWorld]:
    served = _serve(world)
    try:
        yield world
    finally:
        served.server.should_exit = True
        served.thread.join(timeout=10)


KEY = "sk-civflow-TOP-SECRET-0123456789"
WF = "/v2/consumer/workflows"
T = TypeVar("T")
_WORKFLOW = {"id": "0-1", "status": "succeeded", "cost": {"total": 8}, "steps": [
    {"$type": "echo", "name": "$0", "status": "succeeded", "output": {"message": "hi"}}]}


def in_process() -> FakeWorld:
    """A scripted API reached in-process (`httpx.ASGITransport`), for answers alone."""
    world = FakeWorld(url="http://api.test")
    world.transport = httpx.ASGITransport(app=world)
    return world


@pytest.fixture
def world() -> FakeWorld:
    """The scripted API in-process: for answers, which need no socket."""
    return in_process()


@pytest.fixture
def served() -> Iterator[FakeWorld]:
    """The scripted API over real HTTP: a drop or a cut body needs a connection to break."""
    yield from serve_fake(FakeWorld())


@pytest.fixture
def elsewhere() -> Iterator[FakeWorld]:
    """A second origin (another port): a CDN the API redirects downloads to."""
    yield from serve_fake(FakeWorld())


def _run(world: FakeWorld, use: Callable[[CivitaiClient], Awaitable[T]],
         seen: list[tuple[str, str, int]] | None = None, **options: Any) -> T:
    async def main() -> T:
        options.setdefault("backoff_base", 0.001)
        options.setdefault("backoff_cap", 0.01)
        options.setdefault("rng", random.Random(20241125))  # seeded retry jitter
        client = CivitaiClient(world.url, KEY, on_request=(
            (lambda m, r, s: seen.append((m, r, s))) if seen is not None else None),
            transport=world.transport, **options)
        async with client:
            return await use(client)
    return asyncio.run(main())


def test_a_429_with_retry_after_is_retried(world: FakeWorld) -> None:
    world.script(f"GET {WF}/0-1", ("json", 429, {"status": 429}, {"Retry-After": "1"}),
                 ("json", 200, _WORKFLOW, {}))
    seen: list[tuple[str, str, int]] = []
    state = _run(world, lambda c: c.get("0-1"), seen)
    assert state.status == "succeeded" and state.cost == 8.0
    assert state.steps[0].output == {"message": "hi"}
    assert seen == [("GET", f"{WF}/{{id}}", 429), ("GET", f"{WF}/{{id}}", 200)]


def test_a_far_http_date_retry_after_is_capped(world: FakeWorld) -> None:
    world.script(f"GET {WF}/0-1",
                 ("json", 429, {}, {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}),
                 ("json", 200, _WORKFLOW, {}))
    assert _run(world, lambda c: c.get("0-1")).id == "0-1"
    assert world.hits(f"GET {WF}/0-1") == 2


def test_rate_limited_after_every_attempt(world: FakeWorld) -> None:
    world.script(f"GET {WF}/0-1", 429)
    with pytest.raises(RateLimited) as info:
        _run(world, lambda c: c.get("0-1"), max_attempts=4)
    assert info.value.status == 429
    assert world.hits(f"GET {WF}/0-1") == 4


def test_5xx_then_success(world: FakeWorld) -> None:
    world.script(f"GET {WF}/0-1", 502, 503, ("json", 200, _WORKFLOW, {}))
    assert _run(world, lambda c: c.get("0-1")).is_terminal
    assert world.hits(f"GET {WF}/0-1") == 3


def test_an_html_5xx_page_is_not_dumped(world: FakeWorld) -> None:
    world.script(f"GET {WF}/0-1", ("text", 503, "<!DOCTYPE html><html>" + "x" * 5000))
    with pytest.raises(ServiceUnavailable) as info:
        _run(world, lambda c: c.get("0-1"), max_attempts=2)
    assert "<!DOCTYPE" not in str(info.value)
    assert "HTML error page" in str(info.value)
    assert info.value.status == 503


def test_a_dropped_connection_is_retried(served: FakeWorld) -> None:
    served.script(f"GET {WF}/0-1", "drop", "drop", ("json", 200, _WORKFLOW, {}))
    seen: list[tuple[str, str, int]] = []
    assert _run(served, lambda c: c.get("0-1"), seen).id == "0-1"
    assert [s for _, _, s in seen] == [0, 0, 200]


def test_submit_with_external_id_is_retried_after_a_drop(served: FakeWorld) -> None:
    served.script(f"POST {WF}", "drop", ("json", 202, _WORKFLOW, {}))
    state = _run(served, lambda c: c.submit({"steps": [], "externalId": "cf-abc-1"}, wait=5))
    assert state.id == "0-1"
    assert served.hits(f"POST {WF}") == 2
    assert served.seen[-1].query == "wait=5&whatif=false"


def test_submit_without_external_id_is_not_repeated(served: FakeWorld) -> None:
    """The first POST may have created (and charged) a workflow: never send it twice."""
    served.script(f"POST {WF}", "drop", ("json", 202, _WORKFLOW, {}))
    with pytest.raises(ServiceUnavailable) as info:
        _run(served, lambda c: c.submit({"steps": []}))
    assert served.hits(f"POST {WF}") == 1
    assert info.value.hint and "may have reached" in info.value.hint
    served.script(f"POST {WF}", 503, ("json", 202, _WORKFLOW, {}))
    with pytest.raises(ServiceUnavailable):
        _run(served, lambda c: c.submit({"steps": []}))
    assert served.hits(f"POST {WF}") == 2


def test_whatif_is_always_safe_to_retry(served: FakeWorld) -> None:
    served.script(f"POST {WF}", "drop", ("json", 200, {**_WORKFLOW, "id": None}, {}))
    state = _run(served, lambda c: c.submit({"steps": []}, whatif=True))
    assert state.id is None and state.cost == 8.0


@pytest.mark.parametrize(("action", "kind", "words"), [
    (("json", 400, {"title": "One or more validation errors occurred.", "status": 400,
                    "errors": {"steps[0].input.resolution": ["The value '4k' is not valid."]}},
      {}), ApiRejected, "steps[0].input.resolution: The value '4k' is not valid."),
    (401, AuthenticationError, "refused the key (401"),
    (("text", 403, '"Insufficient buzz to complete the request"'), InsufficientFunds,
     "not enough Buzz for the workflow: Insufficient buzz"),
    (("text", 403, "Mature content is not allowed for this account"), AuthenticationError,
     "not permitted (403): Mature content"),
    (404, ApiNotFound, "not found (404)"),
])
def test_client_errors_are_mapped_and_never_retried(
        world: FakeWorld, action: Any, kind: type[CivflowError], words: str) -> None:
    world.script(f"POST {WF}", action)
    with pytest.raises(kind) as info:
        _run(world, lambda c: c.submit({"steps": [], "externalId": "cf-x-1"}))
    assert words in str(info.value)
    assert world.hits(f"POST {WF}") == 1


def test_a_400_keeps_the_errors_map(world: FakeWorld) -> None:
    errors = {"tags": ["Too many tags."], "externalId": ["Bad pattern."]}
    world.script(f"POST {WF}", ("json", 400, {"status": 400, "errors": errors}, {}))
    with pytest.raises(ApiRejected) as info:
        _run(world, lambda c: c.submit({"steps": []}))
    assert info.value.detail == errors
    assert "tags: Too many tags., externalId: Bad pattern." in str(info.value)


def test_query_cancel_delete_refresh_upload_resource(world: FakeWorld, tmp_path: Path) -> None:
    world.script(f"GET {WF}", ("json", 200, {"items": [_WORKFLOW], "next": "c2"}, {}))
    world.script(f"PUT {WF}/0-1", 204)
    world.script(f"DELETE {WF}/0-1", 204)
    world.script("POST /v2/consumer/blobs/B1.png/refresh",
                 ("json", 200, {"id": "B1.png", "url": "u"}, {}))
    world.script("POST /v2/consumer/blobs", ("json", 201, {"id": "B2.png", "url": "u2"}, {}))
    world.script("GET /v2/resources/urn:air:sdxl:lora:civitai:1@2",
                 ("json", 200, {"air": "x"}, {}))
    upload = tmp_path / "in.png"
    upload.write_bytes(b"\x89PNG-bytes")

    async def use(client: CivitaiClient) -> list[Any]:
        listed = await client.query(tags=["civflow", "p:hero"], take=5, cursor="c1")
        await client.cancel("0-1")
        await client.delete("0-1")
        return [listed, await client.refresh_blob("B1.png"),
                await client.upload_blob(upload, "image/png"),
                await client.resource("urn:air:sdxl:lora:civitai:1@2")]
    (states, cursor), blob, uploaded, resource = _run(world, use)
    assert [s.id for s in states] == ["0-1"] and cursor == "c2"
    assert blob["id"] == "B1.png" and uploaded["id"] == "B2.png" and resource == {"air": "x"}
    by_method = {s.method + " " + s.path: s for s in world.seen}
    assert by_method[f"GET {WF}"].query.startswith("tags=civflow&tags=p%3Ahero&take=5")
    assert by_method[f"PUT {WF}/0-1"].body == b'{"status":"canceled"}'
    posted = by_method["POST /v2/consumer/blobs"]
    assert posted.body == b"\x89PNG-bytes" and posted.headers["content-type"] == "image/png"
    assert all(s.headers["authorization"] == f"Bearer {KEY}" for s in world.seen)


def test_download_follows_a_308_without_leaking_the_key(
        served: FakeWorld, elsewhere: FakeWorld, tmp_path: Path) -> None:
    content = bytes(range(256)) * 1000
    served.script("GET /v2/consumer/blobs/B1.png",
                  ("redirect", f"{elsewhere.url}/content/tok"))
    elsewhere.script("GET /content/tok", ("bytes", 200, content, "image/png"))
    dest = tmp_path / "store" / "B1.png.part"
    seen: list[tuple[str, str, int]] = []
    got = _run(served, lambda c: c.download(f"{served.url}/v2/consumer/blobs/B1.png?sig=s",
                                            dest), seen)
    assert got.sha256 == hashlib.sha256(content).hexdigest()
    assert (got.size, got.media_type, got.path) == (len(content), "image/png", dest)
    assert dest.read_bytes() == content
    assert served.seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert "authorization" not in elsewhere.seen[0].headers
    assert seen == [("GET", "download", 308), ("GET", "download", 200)]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["B1.png.part"]


def test_an_expired_signature_is_a_403_and_leaves_nothing(
        world: FakeWorld, tmp_path: Path) -> None:
    world.script("GET /v2/consumer/blobs/B1.png", ("text", 403, "Signature expired"))
    dest = tmp_path / "B1.png"
    with pytest.raises(AuthenticationError) as info:
        _run(world, lambda c: c.download(f"{world.url}/v2/consumer/blobs/B1.png?sig=old", dest))
    assert info.value.status == 403 and info.value.hint and "refresh" in info.value.hint
    assert list(tmp_path.iterdir()) == []
    assert world.hits("GET /v2/consumer/blobs/B1.png") == 1


def test_download_retries_a_drop_and_never_leaves_a_partial_file(
        served: FakeWorld, tmp_path: Path) -> None:
    served.script("GET /b", "drop", ("bytes", 200, b"payload", "application/octet-stream"))
    dest = tmp_path / "out.bin"
    got = _run(served, lambda c: c.download(f"{served.url}/b", dest))
    assert got.sha256 == hashlib.sha256(b"payload").hexdigest()
    served.script("GET /b", "drop")
    with pytest.raises(ServiceUnavailable):
        _run(served, lambda c: c.download(f"{served.url}/b", tmp_path / "never.bin"),
             max_attempts=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_a_body_cut_mid_stream_is_downloaded_again(served: FakeWorld, tmp_path: Path) -> None:
    content = b"0123456789" * 10_000
    served.script("GET /v", ("partial", content), ("bytes", 200, content, "image/png"))
    dest = tmp_path / "v.png"
    got = _run(served, lambda c: c.download(f"{served.url}/v", dest))
    assert got.size == len(content) and dest.read_bytes() == content
    assert served.hits("GET /v") == 2
    served.script("GET /v", ("partial", content))
    with pytest.raises(ServiceUnavailable):
        _run(served, lambda c: c.download(f"{served.url}/v", tmp_path / "cut.png"),
             max_attempts=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.png"]


def test_the_key_goes_only_to_the_api_origin(served: FakeWorld, elsewhere: FakeWorld,
                                             tmp_path: Path) -> None:
    elsewhere.script("GET /cdn/x", ("bytes", 200, b"x", "image/png"))
    _run(served, lambda c: c.download(f"{elsewhere.url}/cdn/x", tmp_path / "x"))
    assert "authorization" not in elsewhere.seen[0].headers


def _texts(exc: BaseException) -> Iterator[str]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield repr(getattr(current, "args", ()))
        if isinstance(current, CivflowError):
            yield current.render()
            yield repr(getattr(current, "detail", None))
        todo += [current.__cause__, current.__context__]


def test_the_key_never_appears_in_errors_or_logs(
        served: FakeWorld, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    # A server that echoes the key back in its error bodies, the worst case.
    served.script(f"GET {WF}/a", ("json", 400, {"errors": {"auth": [f"Bearer {KEY}"]}}, {}))
    served.script(f"GET {WF}/b", ("text", 403, f"key {KEY} lacks buzz"))
    served.script(f"GET {WF}/c", ("text", 500, f"crash with {KEY}"))
    served.script(f"GET {WF}/d", "drop")
    served.script(f"GET {WF}/e", ("json", 429, {"detail": KEY}, {}))
    served.script(f"GET {WF}/f", ("text", 418, f"teapot {KEY}"))
    failures: list[BaseException] = []
    for name in "abcdef":
        try:
            _run(served, lambda c, n=name: c.get(n), max_attempts=2)  # type: ignore[misc]
        except CivflowError as exc:
            failures.append(exc)
    assert len(failures) == 6
    for failure in failures:
        for text in _texts(failure):
            assert KEY not in text
    with pytest.raises(AuthenticationError) as bad:
        CivitaiClient(served.url, "sk-with\nnewline")
    assert "newline" not in str(bad.value)
    client_repr = _run(served, lambda c: asyncio.sleep(0, repr(c)))
    assert KEY not in client_repr and "api_key=<set>" in client_repr
    assert KEY not in caplog.text
    assert "retrying" in caplog.text  # the log was captured at all


def test_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CIVITAI_API_KEY", "  ")
    monkeypatch.delenv("CIVITAI_BASE_URL", raising=False)
    with pytest.raises(AuthenticationError) as info:
        CivitaiClient.from_env()
    assert "CIVITAI_API_KEY" in str(info.value) and info.value.hint
    key_file = tmp_path / "key"
    key_file.write_text(f"  {KEY}\n")
    monkeypatch.setenv("CIVITAI_BASE_URL", "http://127.0.0.1:9")
    client = CivitaiClient.from_env(key_file)
    assert str(client.base_url) == "http://127.0.0.1:9/"
    asyncio.run(client.aclose())
    monkeypatch.setenv("CIVITAI_API_KEY", KEY)
    monkeypatch.delenv("CIVITAI_BASE_URL")
    client = CivitaiClient.from_env()
    assert str(client.base_url) == "https://orchestration.civitai.com/"
    asyncio.run(client.aclose())
    with pytest.raises(AuthenticationError, match="no such API key file"):
        CivitaiClient.from_env(tmp_path / "missing")
    assert client.backoff_cap == 30.0
    monkeypatch.setenv("CIVFLOW_BACKOFF_CAP", "0.25")
    client = CivitaiClient.from_env()
    assert client.backoff_cap == 0.25
    asyncio.run(client.aclose())
    for bad in ("soon", "-1", "inf", "nan"):
        monkeypatch.setenv("CIVFLOW_BACKOFF_CAP", bad)
        with pytest.raises(UsageError, match="CIVFLOW_BACKOFF_CAP must be a number of seconds"):
            CivitaiClient.from_env()


def test_the_backoff_cap_cuts_a_long_retry_after(world: FakeWorld) -> None:
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
    world.script(f"GET {WF}/0-1", ("json", 429, {}, {"Retry-After": "120"}), 503,
                 ("json", 200, _WORKFLOW, {}))
    assert _run(world, lambda c: c.get("0-1"), backoff_base=10.0, backoff_cap=0.5,
                sleep=sleep).id == "0-1"
    assert pauses[0] == 0.5 and 0 <= pauses[1] <= 0.5 and len(pauses) == 2


def test_a_key_too_short_to_blank_safely_is_refused() -> None:
    for short in ("k", "test", "x" * 15):
        with pytest.raises(AuthenticationError) as refused:
            CivitaiClient("http://127.0.0.1:9", short)
        assert "characters long; civflow needs at least 16" in refused.value.message
        assert refused.value.hint is not None and "16 or more" in refused.value.hint
    CivitaiClient("http://127.0.0.1:9", "x" * 16)  # long enough
