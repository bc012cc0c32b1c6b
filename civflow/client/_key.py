"""The API key: checked once, sent only to the API's own origin, never shown."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx

from civflow.client.base import remember_secret
from civflow.errors import AuthenticationError

__all__ = ["KEY_HINT", "MIN_KEY_LENGTH", "Key"]

_KEY_SHAPE = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: a header-safe token
# Shorter keys are refused: the key is blanked wherever it could be shown, and a key
# like `k` or `test` matches ordinary text (civitai.com keys are 32 hex characters).
MIN_KEY_LENGTH = 16
KEY_HINT = ("set CIVITAI_API_KEY (create a key at https://civitai.com/user/account), pass "
            "--api-key-file, or try the pipeline offline with --emulator")


class _Secret:
    """Holds the key so that no repr, vars() dump or debugger display shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"


class _Redacted(Exception):  # a stand-in cause, never raised on its own
    """The text of a foreign exception with the key blanked out."""


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    port = url.port or {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, port


class Key:
    """The API key, or none: refused unless it is a plausible key, registered with
    `remember_secret`, put in a request only to the API's own origin, and blanked out
    of every text the client builds (`redact`, `redact_value`, `cause`)."""

    __slots__ = ("_secret",)

    def __init__(self, value: str | None) -> None:
        if value is not None:
            value = value.strip()
            if not value:
                raise AuthenticationError("the Civitai API key is empty", hint=KEY_HINT)
            if not _KEY_SHAPE.match(value):
                # Never echo it: a malformed key may still be a real secret with a typo.
                raise AuthenticationError(
                    "the Civitai API key contains spaces or characters a key never has",
                    hint="copy the key again; it is a single token of printable characters")
            if len(value) < MIN_KEY_LENGTH:
                raise AuthenticationError(
                    f"the Civitai API key is {len(value)} characters long; civflow needs "
                    f"at least {MIN_KEY_LENGTH}",
                    hint="a real key is 32 characters; for the emulator or a CI dry run any "
                         f"random token of {MIN_KEY_LENGTH} or more characters works. civflow "
                         "blanks the key out of what it shows, and a short one would match "
                         "ordinary words in prompts and URLs")
            remember_secret(value)
        self._secret = _Secret(value) if value else None

    def __bool__(self) -> bool:
        """Whether there is a key."""
        return self._secret is not None

    def headers(self, url: httpx.URL, api: httpx.URL) -> dict[str, str]:
        """The Authorization header for a request to `url`: only when `url` is on the
        API's own origin (that of `api`), never for a CDN or a redirect target."""
        if self._secret is not None and _origin(url) == _origin(api):
            return {"Authorization": f"Bearer {self._secret.reveal()}"}
        return {}

    def redact(self, text: str) -> str:
        if self._secret is not None:
            text = text.replace(self._secret.reveal(), "<redacted>")
        return text

    def redact_value(self, value: Any) -> Any:
        """`value` with the key blanked in every string, however deep (for `detail`)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {self.redact(str(k)): self.redact_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_value(v) for v in value]
        return value

    def cause(self, exc: BaseException) -> BaseException:
        """`exc` itself, or a redacted stand-in if its text would show the key."""
        if self._secret is not None:
            key = self._secret.reveal()
            if key in str(exc) or key in repr(exc):
                return _Redacted(f"{type(exc).__name__}: {self.redact(str(exc))}")
        return exc
