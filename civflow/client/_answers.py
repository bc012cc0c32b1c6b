"""Reading what the API answers: JSON within bounds, Retry-After, error maps, funds refusals.

Pure functions over bytes and parsed JSON, so the wire in `_wire.py` stays
about requests, retries and secrets.
"""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from civflow.client.base import clean_text
from civflow.keys import nested_deeper_than

__all__ = ["MAX_DEPTH", "TooDeep", "errors_summary", "is_funds_refusal", "loads",
           "retry_after"]

MAX_DEPTH = 100  # nesting levels of a JSON answer; real workflows use about fifteen


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def errors_summary(errors: Mapping[str, Any]) -> str:
    parts = []
    for path, messages in errors.items():
        text = "; ".join(str(m) for m in messages) if isinstance(messages, list) else messages
        parts.append(f"{path}: {text}" if text else str(path))
    return clean_text(", ".join(parts), 1000)


class TooDeep(ValueError):
    """A JSON text nested deeper than `MAX_DEPTH`."""


def loads(content: bytes) -> Any:
    """Parse a JSON answer; `ValueError` if it is not JSON, `TooDeep` if it nests too far.

    Python's parser recurses once per level, so a hostile `[[[[…` raises
    RecursionError there; that and an answer merely too deep for the code that walks
    it later are both refused here."""
    try:
        data = json.loads(content)
    except RecursionError as exc:
        raise TooDeep("nested too deeply") from exc
    if isinstance(data, dict | list) and nested_deeper_than(data, MAX_DEPTH):
        raise TooDeep("nested too deeply")
    return data


def _insufficient_flag(body: Mapping[str, Any]) -> bool | None:
    """The API's own yes/no on missing Buzz, when the body carries one: an
    `insufficientBuzz` boolean at the top or under `transactions` (the field a whatif
    answer uses, civitai-api.md §2.2, §8)."""
    for holder in (body, body.get("transactions")):
        if isinstance(holder, Mapping) and isinstance(holder.get("insufficientBuzz"), bool):
            return bool(holder["insufficientBuzz"])
    return None


_FUNDS_CODE = re.compile(r"^\W*insufficient[\W_]*(funds|buzz|balance)\W*$", re.IGNORECASE)


def is_funds_refusal(body: Any, text: str) -> bool:
    """Whether a 403 is about money. Structure decides where the body has it: an
    `insufficientBuzz` flag (true or false), or a `code`/`errorCode`/`reason`/`type`
    field whose whole value (or last URI segment) is an insufficient-funds code.
    Only without any of these is the text read: the plain-string body the API
    documents for a submit 403 (civitai-api.md §10), or a ProblemDetails' title and
    detail (`text`, the one-line summary)."""
    if isinstance(body, Mapping):
        flag = _insufficient_flag(body)
        if flag is not None:
            return flag
        for key in ("code", "errorCode", "reason", "type"):
            value = body.get(key)
            if isinstance(value, str) and _FUNDS_CODE.match(value.rstrip("/").rsplit("/", 1)[-1]):
                return True
    return bool(re.search(r"fund|buzz", text, re.IGNORECASE))
