"""CivitaiClient against a hostile or broken server over real HTTP: every wait, body and
text it hands on stays bounded, typed and free of the key.

Each test names the promise it guards. The server is `hostile_server.HostileServer`
on 127.0.0.1; nothing of civflow is mocked. Tests make no timing assertions: short
deadlines only make a trickling server lose sooner.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from civflow.client.base import REASON_LIMIT, Failure, WorkflowState, clean_text
from civflow.client.civitai import CivitaiClient
from civflow.errors import (
    ApiError,
    ApiProtocolError,
    AuthenticationError,
    InsufficientFunds,
    ServiceUnavailable,
)
from tests.client.hostile_server import (
    Endless,
    HostileServer,
    Reply,
    Trickle,
    serve_hostile,
)

KEY = "sk-civflow-HOSTILE-SECRET-42"
WF = "/v2/consumer/workflows"
MB = 1024 * 1024
T = TypeVar("T")


@pytest.fixture
def api() -> Iterator[HostileServer]:
    with serve_hostile() as server:
        yield server


@pytest.fixture
def elsewhere() -> Iterator[HostileServer]:
    """A second origin: where a hostile API tries to send the client (and its key)."""
    with serve_hostile() as server:
        yield server


def _run(server: HostileServer, use: Callable[[CivitaiClient], Awaitable[T]],
         seen: list[tuple[str, str, int]] | None = None, **options: Any) -> T:
    async def main() -> T:
        options.setdefault("backoff_base", 0.001)
        options.setdefault("backoff_cap", 0.01)
        options.setdefault("rng", random.Random(1))
        client = CivitaiClient(server.url, KEY, on_request=(
            (lambda m, r, s: seen.append((m, r, s))) if seen is not None else None), **options)
        async with client:
            return await use(client)
    return asyncio.run(main())


def _workflow(status: str = "processing", **extra: Any) -> dict[str, Any]:
    step = {"$type": "echo", "name": "$0", "status": status, "jobs": [{"id": "j1",
                                                                       "status": status}]}
    return {"id": "0-1", "status": status, "cost": {"total": 1}, "steps": [step], **extra}


# -- 1. every request and download has a total deadline and a size cap ---------------------


@pytest.mark.parametrize("in_head", [False, True], ids=["body", "head"])
def test_a_trickling_answer_ends_at_the_request_deadline(api: HostileServer,
                                                         in_head: bool) -> None:
    """Promise: one byte every few seconds cannot hang civflow; per-read timeouts alone
    would wait forever, the total deadline per attempt does not (and retries are bounded)."""
    api.script(f"GET {WF}/0-1", Trickle(in_head=in_head))
    with pytest.raises(ServiceUnavailable) as info:
        _run(api, lambda c: c.get("0-1"), deadline=0.3, max_attempts=2)
    assert not isinstance(info.value, ApiProtocolError)
    assert "did not answer in full within 0.3 s" in info.value.message
    assert api.hits(f"GET {WF}/0-1") == 2


def test_the_request_deadline_allows_for_the_wait_asked(api: HostileServer) -> None:
    """Promise: the deadline is on top of `wait`, so a legitimate long-poll is not cut;
    the deadline that was applied is named in the error."""
    api.script(f"GET {WF}/0-1", Trickle())
    with pytest.raises(ServiceUnavailable) as info:
        _run(api, lambda c: c.get("0-1", wait=1), deadline=0.2, max_attempts=1)
    assert "within 1.2 s" in info.value.message


def test_an_endless_json_answer_is_cut_at_the_cap(api: HostileServer) -> None:
    """Promise: a huge answer is read as a stream and refused past `max_json_bytes`,
    with a clear ApiProtocolError, never buffered whole (the 300 MB / 720 MB case)."""
    api.script(f"GET {WF}/0-1", Endless())
    with pytest.raises(ApiProtocolError) as info:
        _run(api, lambda c: c.get("0-1"), max_json_bytes=256 * 1024)
    assert "the API answered more than 262,144 bytes; civflow stopped reading" \
        in info.value.message
    assert api.hits(f"GET {WF}/0-1") == 1  # not retried
    sent = api.wait_sent()
    assert sent and sent[0] < 256 * MB  # the server was cut off, not drained


def test_a_declared_length_over_the_cap_is_refused_unread(api: HostileServer) -> None:
    """Promise: a Content-Length beyond the cap is refused before reading the body."""
    api.script(f"GET {WF}/0-1", Endless(content_length=300 * MB))
    with pytest.raises(ApiProtocolError, match="more than 16,777,216 bytes"):
        _run(api, lambda c: c.get("0-1"))


def test_a_trickling_download_ends_at_its_deadline(api: HostileServer, tmp_path: Path) -> None:
    """Promise: a blob download must keep up a rate (a grace period plus time per MiB
    received); a trickle never earns more time, and leaves no partial file."""
    api.script("GET /blob", Trickle(byte=b"x", content_type="image/png"))
    with pytest.raises(ServiceUnavailable) as info:
        _run(api, lambda c: c.download(f"{api.url}/blob", tmp_path / "b.png"),
             download_deadline=0.3, max_attempts=2)
    assert "download of a blob too slow" in info.value.message
    assert "0.3 s plus 5 s per MiB received" in info.value.message
    assert api.hits("GET /blob") == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("declared", [None, 300 * MB], ids=["streamed", "declared"])
def test_a_download_is_capped(api: HostileServer, tmp_path: Path, declared: int | None) -> None:
    """Promise: a download cannot grow without bound: past `max_download_bytes` (or when
    it declares more) it is stopped, not retried, and nothing is left on disk."""
    api.script("GET /blob", Endless(chunk=b"\0" * 65536, prefix=b"", content_type="video/mp4",
                                    content_length=declared))
    with pytest.raises(ApiProtocolError) as info:
        _run(api, lambda c: c.download(f"{api.url}/blob", tmp_path / "v.mp4"),
             max_download_bytes=MB)
    assert "larger than the 1,048,576 bytes allowed" in info.value.message
    assert api.hits("GET /blob") == 1
    assert list(tmp_path.iterdir()) == []


# -- 2. deep, id-less and self-contradictory answers are recognised ------------------------


@pytest.mark.parametrize("depth", [100_000, 500])
def test_deeply_nested_json_is_a_clear_error(api: HostileServer, depth: int) -> None:
    """Promise: no RecursionError or traceback from a hostile nesting, whether it breaks
    the parser (100k) or only the code that would walk it later (500)."""
    api.script(f"GET {WF}/0-1", Reply(200, b"[" * depth + b"]" * depth))
    with pytest.raises(ApiProtocolError) as info:
        _run(api, lambda c: c.get("0-1"))
    assert "the API answered JSON nested more than 100 levels deep" in info.value.message


def test_a_deeply_nested_error_body_is_summarised(api: HostileServer) -> None:
    """Promise: an error answer nested too deep is still reported, as text, not a crash."""
    api.script(f"GET {WF}/0-1", Reply(500, b"{\"a\":" * 100_000 + b"1" + b"}" * 100_000))
    with pytest.raises(ServiceUnavailable) as info:
        _run(api, lambda c: c.get("0-1"), max_attempts=1)
    assert "the API answered 500 after 1 attempts" in info.value.message
    assert len(info.value.message) < 500


def test_a_submit_answer_without_an_id_is_a_protocol_error(api: HostileServer) -> None:
    """Promise: a workflow civflow could neither poll nor cancel is refused at parse time;
    a whatif (which creates nothing) may still lack an id."""
    answer = _workflow()
    del answer["id"]
    api.script(f"POST {WF}", Reply(202, answer))
    with pytest.raises(ApiProtocolError, match="the API answered a workflow without an id"):
        _run(api, lambda c: c.submit({"steps": [], "externalId": "cf-1"}, wait=5))
    assert _run(api, lambda c: c.submit({"steps": []}, whatif=True)).id is None


@pytest.mark.parametrize(("steps", "words"), [
    ([], "the API reported the workflow succeeded but sent no steps"),
    ([{"$type": "echo", "name": "$0", "status": "failed"}],
     "the API reported the workflow succeeded but its step $0 is failed"),
])
def test_succeeded_without_successful_steps_is_malformed(
        api: HostileServer, steps: list[Any], words: str) -> None:
    """Promise: a `succeeded` workflow with nothing to collect is flagged at parse time
    (`WorkflowState.malformed`) for the executor to treat as a failure."""
    api.script(f"GET {WF}/0-1", Reply(200, {**_workflow("succeeded"), "steps": steps}))
    state = _run(api, lambda c: c.get("0-1"))
    assert state.malformed == words
    assert state.failure() == Failure(words, blocked=False)
    api.script(f"GET {WF}/0-1", Reply(200, _workflow("succeeded")))
    assert _run(api, lambda c: c.get("0-1")).malformed is None


# -- 3. a redirect from the API is named and not followed ----------------------------------


@pytest.mark.parametrize("status", [302, 307])
def test_a_redirect_from_the_api_is_named_and_not_followed(
        api: HostileServer, elsewhere: HostileServer, status: int) -> None:
    """Promise: a 3xx is reported as a redirect (not as 'not JSON'), and neither the
    request nor the key ever goes to the other origin."""
    api.script(f"GET {WF}/0-1", Reply(status, b"", {"Location": f"{elsewhere.url}/steal"}))
    with pytest.raises(ApiProtocolError) as info:
        _run(api, lambda c: c.get("0-1"))
    assert info.value.message == (
        f"GET {WF}/{{id}}: the API answered {status} redirect to {elsewhere.url}; "
        "civflow does not follow redirects from the API")
    assert info.value.hint and "CIVITAI_BASE_URL" in info.value.hint
    assert api.hits(f"GET {WF}/0-1") == 1
    assert elsewhere.seen == []


# -- 4. only http(s) blob URLs are fetched -------------------------------------------------


@pytest.mark.parametrize("url", ["file:///etc/passwd", "FILE:///etc/hostname",
                                 "ftp://127.0.0.1/x", "gopher://127.0.0.1:70/x"])
def test_a_non_http_blob_url_is_refused_before_any_request(
        api: HostileServer, tmp_path: Path, url: str) -> None:
    """Promise: a `file://` (or any non-http(s)) URL from the server is refused with its
    own message, before any request, and no local file is opened."""
    seen: list[tuple[str, str, int]] = []
    with pytest.raises(ApiProtocolError) as info:
        _run(api, lambda c: c.download(url, tmp_path / "x.png"), seen)
    scheme = url.split(":", 1)[0].lower()
    assert info.value.message == (
        f"the API gave a blob URL with scheme '{scheme}:'; civflow downloads only http and "
        "https URLs and never opens local files for the API")
    assert seen == [] and api.seen == []
    assert list(tmp_path.iterdir()) == []


def test_a_download_redirected_to_a_file_url_is_refused(api: HostileServer,
                                                        tmp_path: Path) -> None:
    """Promise: the same refusal holds after a redirect, and is not retried."""
    api.script("GET /blob", Reply(308, b"", {"Location": "file:///etc/passwd"}))
    with pytest.raises(ApiProtocolError, match="redirected to a URL with scheme 'file:'"):
        _run(api, lambda c: c.download(f"{api.url}/blob", tmp_path / "x.png"))
    assert api.hits("GET /blob") == 1
    assert list(tmp_path.iterdir()) == []


# -- 5. server texts are redacted, cleaned and capped; `blocked` comes from structure -------


def _failed(jobs: list[dict[str, Any]], output: dict[str, Any] | None = None) -> dict[str, Any]:
    step: dict[str, Any] = {"$type": "imageGen", "name": "$0", "status": "failed", "jobs": jobs,
                            "metadata": {"note": f"echoed {KEY}"}}
    if output is not None:
        step["output"] = output
    return {"id": "0-1", "status": "failed", "cost": {"total": 2}, "steps": [step],
            "metadata": {KEY: KEY}}


def test_failure_reasons_are_redacted_and_capped_and_data_is_kept(api: HostileServer) -> None:
    """Promise: a server-sent text civflow shows (a failure reason, a repr) never
    carries the key; reasons are one line, free of terminal escapes, capped. The
    answer itself (`raw`, a blob record) is data and comes back exactly as sent."""
    long_reason = f"\x1b[2J\x1b]0;pwned\x07boom with {KEY}\nand more " + "x" * 5000
    api.script(f"GET {WF}/0-1", Reply(200, _failed([{"id": "j", "status": "failed",
                                                     "reason": long_reason}])))
    api.script("POST /v2/consumer/blobs/B.png/refresh",
               Reply(200, {"id": "B.png", "url": f"https://cdn/{KEY}"}))

    async def use(client: CivitaiClient) -> tuple[WorkflowState, Any]:
        return await client.get("0-1"), await client.refresh_blob("B.png")
    state, blob = _run(api, use)
    failure = state.failure()
    assert failure.reason is not None and not failure.blocked
    assert failure.reason.startswith("[2J ]0;pwned boom with <redacted> and more xxx")
    assert len(failure.reason) == REASON_LIMIT and failure.reason.endswith("…")
    assert not any(ord(ch) < 32 for ch in failure.reason)
    assert KEY not in repr(state)
    assert state.raw["metadata"] == {KEY: KEY}
    assert state.steps[0].raw["metadata"] == {"note": f"echoed {KEY}"}
    assert blob["url"] == f"https://cdn/{KEY}"


def _echoing(note: str) -> dict[str, Any]:
    return {"id": "0-1", "status": "succeeded", "steps": [
        {"$type": "echo", "name": "$0", "status": "succeeded", "output": {"message": note}}]}


_PLAIN = json.dumps(_echoing(f"echoed {KEY}"), ensure_ascii=False)
_ESCAPED = _PLAIN.replace("sk-", "\\u0073k-")  # the same JSON, one letter escaped


@pytest.mark.parametrize("body", [
    _PLAIN.encode(),  # found in the text as sent
    _ESCAPED.encode(),  # only the parsed strings show it
    _PLAIN.replace("echoed", "\\/echoed").encode(),  # a backslash elsewhere
    _PLAIN.encode("utf-16"),  # JSON in UTF-16: the UTF-8 bytes of the key are not in it
], ids=["plain", "escaped", "backslash", "utf-16"])
def test_an_echoed_key_is_data_but_never_shown(api: HostileServer, body: bytes) -> None:
    """Promise: a key echoed back in an answer, however spelt (as is, escaped, another
    encoding), is left in the data civflow uses and records (outputs are never
    rewritten), and blanked from every text civflow shows about it."""
    message = json.loads(body)["steps"][0]["output"]["message"]
    assert message.endswith(KEY)
    api.script(f"GET {WF}/0-1", Reply(200, body))
    state = _run(api, lambda c: c.get("0-1"))
    assert state.steps[0].output is not None
    assert state.steps[0].output["message"] == message
    assert KEY not in repr(state) and KEY not in clean_text(message)


@pytest.mark.parametrize(("jobs", "output", "expected"), [
    ([{"status": "failed", "reason": "provider said: not blocked, just a timeout"}], None,
     Failure("provider said: not blocked, just a timeout", blocked=False)),
    ([{"status": "failed", "reason": "blocked"}], None, Failure("blocked", blocked=True)),
    ([{"status": "failed", "blockedReason": "moderation", "reason": "failed"}], None,
     Failure("moderation", blocked=True)),
    ([{"status": "failed"}], {"images": [{"id": "B.png", "available": False,
                                          "blockedReason": "nsfw"}], "errors": ["held"]},
     Failure("held", blocked=True)),
    ([{"status": "failed"}], None, Failure(None, blocked=False)),
])
def test_blocked_comes_from_structure_not_from_words(
        api: HostileServer, jobs: list[dict[str, Any]], output: dict[str, Any] | None,
        expected: Failure) -> None:
    """Promise: `Failure.blocked` (which stops --retry-failed from paying again) is read
    from `blockedReason` or the exact `blocked` reason code, never from a substring."""
    api.script(f"GET {WF}/0-1", Reply(200, _failed(jobs, output)))
    assert _run(api, lambda c: c.get("0-1")).failure() == expected


# -- 6. a 403 is about funds when the structure says so -------------------------------------


@pytest.mark.parametrize(("body", "kind"), [
    ({"title": "Forbidden", "detail": "This model needs a Buzz membership tier",
      "insufficientBuzz": False}, AuthenticationError),
    ({"title": "Forbidden", "status": 403, "transactions": {"insufficientBuzz": True}},
     InsufficientFunds),
    ({"title": "Forbidden", "code": "InsufficientBuzz"}, InsufficientFunds),
    ({"title": "Forbidden", "detail": "mature content is off for this account"},
     AuthenticationError),
    ("Insufficient buzz to complete the request", InsufficientFunds),
])
def test_a_403_is_about_funds_when_the_structure_says_so(
        api: HostileServer, body: Any, kind: type[ApiError]) -> None:
    """Promise: structured fields decide (an `insufficientBuzz` flag, a funds code); the
    plain string body the API documents for submit still reads as text."""
    api.script(f"POST {WF}", Reply(403, body))
    with pytest.raises(ApiError) as info:
        _run(api, lambda c: c.submit({"steps": [], "externalId": "cf-1"}))
    assert type(info.value) is kind and info.value.status == 403
    assert api.hits(f"POST {WF}") == 1


# -- 7. a server that ignores `wait` is not polled in a tight loop --------------------------


def test_a_long_poll_answered_at_once_is_followed_by_a_growing_pause(api: HostileServer) -> None:
    """Promise: get(wait>0) answered at once and non-terminal pauses before returning,
    from about 1 s doubling to 10 s with seeded jitter; a terminal answer resets it."""
    api.script(f"GET {WF}/0-1", *[Reply(202, _workflow())] * 6, Reply(200, _workflow("failed")),
               Reply(202, _workflow()))
    pauses: list[float] = []

    async def record(seconds: float) -> None:
        pauses.append(seconds)

    async def use(client: CivitaiClient) -> list[str]:
        states = [await client.get("0-1", wait=30) for _ in range(8)]
        await client.get("0-1", wait=0)  # an explicit short poll is the caller's choice
        return [s.status for s in states]
    statuses = _run(api, use, sleep=record, rng=random.Random(7))
    assert statuses == ["processing"] * 6 + ["failed", "processing"]
    assert len(pauses) == 7  # six early answers, none after the terminal one, one after
    for n, pause in enumerate(pauses[:6], start=1):
        ceiling = min(10.0, 2.0 ** (n - 1))
        assert ceiling / 2 <= pause <= ceiling
    assert 0.5 <= pauses[6] <= 1.0  # the count started again after the terminal answer
    assert api.hits(f"GET {WF}/0-1") == 9


def test_poll_delay_is_seeded() -> None:
    """Promise: the jitter comes from the injected RNG, so a seeded run is repeatable."""
    first = CivitaiClient("http://127.0.0.1:9", KEY, rng=random.Random(3))
    second = CivitaiClient("http://127.0.0.1:9", KEY, rng=random.Random(3))
    try:
        assert [first.poll_delay(n) for n in range(1, 8)] == \
            [second.poll_delay(n) for n in range(1, 8)]
    finally:
        asyncio.run(first.aclose())
        asyncio.run(second.aclose())
