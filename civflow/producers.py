"""Which instance made an output, so a change caused upstream is named by that instance.

An input that reads an upstream result holds it as a content token
(`civflow-blob:sha256:…`), a blob id or a URL naming one. When the upstream instance is
made again, the token changes and so does every request that reads it; shown as two
hashes, the reader cannot tell why. `Producers` knows, from the lockfile, which instance
made each output, so `plan`, the PR comment and the report all say
`upstream shot[mug-marble] changed` instead, formed here once (`Producers.explain`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

__all__ = ["BLOB_TOKEN", "Producers", "upstream_changed"]

BLOB_TOKEN = "civflow-blob:sha256:"
_TOKEN = re.compile(re.escape(BLOB_TOKEN) + r"[0-9a-f]{64}")
_URL = re.compile(r"^https?://[^?#\s]+")
# A request nests a few levels; deeper than this is not searched for references.
_MAX_DEPTH = 32

Made = tuple[str, Mapping[str, Any]]  # (instance name, its output as planning reads it)


def upstream_changed(instance: str) -> str:
    """The reason an instance changes because the upstream instance it reads changed."""
    return f"upstream {instance} changed"


def _strings(value: Any, depth: int = 0) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif depth < _MAX_DEPTH and isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item, depth + 1)
    elif depth < _MAX_DEPTH and isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item, depth + 1)


def _refs(text: str) -> list[str]:
    """The references a string may hold: content tokens (anywhere in it), or the path
    segments of a URL (one of which may be a blob id)."""
    found = _TOKEN.findall(text)
    if found:
        return found
    url = _URL.match(text)
    if url:
        return [s for s in url.group(0).split("/")[3:] if s]
    return [text]


def _looks_made(value: Any) -> bool:
    """Whether `value` holds something an instance could have made (a token or a URL),
    as opposed to a value written by hand (a prompt, a number)."""
    return any(_TOKEN.search(s) or _URL.match(s) for s in _strings(value))


def _has_token(value: Any) -> bool:
    """Whether `value` holds a content token: an output of some instance, even when the
    lockfile no longer records which (a URL may be one written by hand)."""
    return any(_TOKEN.search(s) for s in _strings(value))


class Producers:
    """Content tokens and blob ids -> the instance that made them.

    Built from outputs as planning reads them (blob URLs replaced by content tokens,
    blob ids under `id`): current results first, so they win over earlier ones; `more`
    yields earlier results and is read only when a reference is not found among these
    (it may be slow: earlier results are read on demand).
    """

    def __init__(self, made: Iterable[Made] = (),
                 more: Callable[[], Iterable[Made]] | None = None) -> None:
        self._by: dict[str, str] = {}
        self._more = more
        for instance, output in made:
            self.add(instance, output)

    def add(self, instance: str, output: Mapping[str, Any]) -> None:
        """Record what `instance` made; a reference already known keeps its first maker."""
        for ref in self._made_in(output):
            self._by.setdefault(ref, instance)

    def add_refs(self, instance: str, refs: Iterable[str]) -> None:
        """Record references `instance` made (content tokens, blob ids) as they are."""
        for ref in refs:
            self._by.setdefault(ref, instance)

    def _made_in(self, output: Any, depth: int = 0) -> Iterator[str]:
        if depth >= _MAX_DEPTH:
            return
        if isinstance(output, Mapping):
            url, blob_id = output.get("url"), output.get("id")
            if isinstance(url, str) and url:
                yield url
                if isinstance(blob_id, str) and blob_id:
                    yield blob_id  # a blob's id, not any field named `id`
            for value in output.values():
                yield from self._made_in(value, depth + 1)
        elif isinstance(output, list | tuple):
            for value in output:
                yield from self._made_in(value, depth + 1)

    def of(self, value: Any) -> str | None:
        """The instance that made the first reference `value` holds (a token, a blob id,
        a URL naming one), searching current results and then earlier ones."""
        found = self._find(value)
        if found is None and self._more is not None and _looks_made(value):
            more, self._more = self._more, None
            for instance, output in more():
                self.add(instance, output)
            found = self._find(value)
        return found

    def named(self, value: Any) -> dict[str, str]:
        """Each string in `value` that holds an output an instance made -> that instance
        (to show `output of shot[mug-marble]` where a request holds its token)."""
        found: dict[str, str] = {}
        for text in _strings(value):
            name = self._find(text)
            if name is not None:
                found[text] = name
        return found

    def _find(self, value: Any) -> str | None:
        for text in _strings(value):
            for ref in _refs(text):
                name = self._by.get(ref)
                if name is not None:
                    return name
        return None

    def explain(self, path: str, old: Any, new: Any) -> str | None:
        """Why the value at `path` differs, when an upstream instance's output is the
        difference: `upstream shot[mug-marble] changed` (the same instance made both, or
        one side is an output no longer recorded); `image reads shot[cap-marble] instead
        of shot[mug-marble]` when another instance is read now; `image reads
        shot[mug-marble]` or `image no longer reads shot[mug-marble]` when the other side
        is a value written by hand. None when neither side is something an instance made:
        then it is an ordinary field change."""
        made_new, made_old = self._find(new), self._find(old)
        if made_new is None and made_old is None:
            # Earlier results are read only when current ones name neither side: the
            # usual case (an upstream made again) finds its new output among them.
            made_new, made_old = self.of(new), self.of(old)
        if made_new is None and made_old is None:
            return None
        if made_new == made_old or (made_old is None and _has_token(old)):
            return upstream_changed(made_new or "")
        if made_new is None and _has_token(new):
            return upstream_changed(made_old or "")
        if made_new is None:
            return f"{path} no longer reads {made_old}"
        if made_old is None:
            return f"{path} reads {made_new}"
        return f"{path} reads {made_new} instead of {made_old}"
