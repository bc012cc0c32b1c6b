"""The AIR resource identifier grammar (`urn:air:{ecosystem}:{type}:{source}:{id}@{version}`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# The grammar of @civitai/client's Air.js, ported to Python `re` (see civitai-api.md §11).
# Its quirks are kept on purpose so civflow parses exactly what the service parses:
# "…@250000.safetensor" puts ".safetensor" into the version, and "urn:air:sd15" reads as
# source "air", id "sd15".
_SEGMENT = r"[A-Za-z0-9_\-/]+"
_ID = r"[A-Za-z0-9_\-/.]+"
AIR_PATTERN = (
    rf"^(?:urn:)?(?:air:)?(?:{_SEGMENT}:)?(?:{_SEGMENT}:)?{_SEGMENT}:{_ID}"
    rf"(?:@{_ID})?(?:\+[0-9]+)?(?:\.[A-Za-z0-9_\-]+)?$"
)
_AIR = re.compile(
    rf"^(?:urn:)?(?:air:)?(?:(?P<ecosystem>{_SEGMENT}):)?(?:(?P<type>{_SEGMENT}):)?"
    rf"(?P<source>{_SEGMENT}):(?P<id>{_ID})(?:@(?P<version>{_ID}))?"
    rf"(?:\+(?P<file_id>[0-9]+))?(?:\.(?P<format>[A-Za-z0-9_\-]+))?$",
    re.IGNORECASE,
)

AIR_EXAMPLE = "urn:air:sdxl:checkpoint:civitai:101055@128078"


@dataclass(frozen=True, slots=True)
class Air:
    """One parsed AIR; absent parts are None."""

    ecosystem: str | None
    type: str | None
    source: str
    id: str
    version: str | None = None
    file_id: int | None = None
    format: str | None = None

    def __str__(self) -> str:
        # Air.stringify's canonical form; unknown ecosystem/type are left out, not invented.
        parts = ("urn:air", self.ecosystem, self.type, self.source, self.id)
        head = ":".join(p for p in parts if p)
        version = f"@{self.version}" if self.version else ""
        file_id = f"+{self.file_id}" if self.file_id is not None else ""
        fmt = f".{self.format}" if self.format else ""
        return f"{head}{version}{file_id}{fmt}"


def parse_air(text: str) -> Air | None:
    """The AIR in `text`, or None when it does not follow the grammar."""
    if not isinstance(text, str):
        return None
    match = _AIR.match(text.strip())
    if match is None:
        return None
    file_id = match.group("file_id")
    return Air(
        ecosystem=match.group("ecosystem"),
        type=match.group("type"),
        source=match.group("source"),
        id=match.group("id"),
        version=match.group("version"),
        file_id=int(file_id) if file_id is not None else None,
        format=match.group("format"),
    )
