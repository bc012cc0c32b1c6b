"""Names from pipelines and the API made safe to use on disk, and writes kept inside their folder.

Nothing a pipeline file, a `--var` or a server answer says may form a path outside
`out/` or the store. Instance names become folder names only through
`safe_dirname`; blob ids are checked by `check_blob_id` and never become paths at
all; every file civflow writes under `out/` passes `contained` first.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from civflow.errors import ApiProtocolError, UnsafePath

__all__ = [
    "MAX_DIRNAME",
    "URL_FIELDS",
    "blob_id_ok",
    "check_blob_id",
    "contained",
    "lockfile_path_for",
    "safe_dirname",
    "safe_extension",
    "strip_urls",
    "unsafe_name_reason",
]

MAX_DIRNAME = 80
# Linux allows 255 bytes per name; 80 characters of UTF-8 may take 320, so bytes are capped too.
_MAX_BYTES = 160
_HASH_LEN = 10
_FORBIDDEN = frozenset('<>:"/\\|?*')
# Reserved device names on Windows, with or without an extension (`CON.txt` is CON too).
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{dev}{n}" for dev in ("COM", "LPT") for n in (*"0123456789", "¹", "²", "³")})
# A suffix safe_dirname itself appends; a name that already ends like one is hashed too, so
# a changed name can never come out equal to an unchanged one.
_SUFFIXED = re.compile(rf"-[0-9a-f]{{{_HASH_LEN}}}$")
# Blob ids seen in practice: `CQW4MKM51BSX2Z9B4Y46QNXQ50.jpeg`, `blob_…`; no separators,
# no dots but the one before the extension.
_BLOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}(\.[A-Za-z0-9]{1,10})?$")
_EXTENSION = re.compile(r"^[a-z0-9]{1,10}$")


def _bad_char(ch: str) -> bool:
    """Characters no folder name gets: separators, wildcards, and invisible controls."""
    if ch in _FORBIDDEN or ord(ch) < 32 or ord(ch) == 127:
        return True
    # Cc controls, Cs lone surrogates (not encodable), Zl/Zp line breaks, Co private use.
    return unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp", "Co")


def _truncate(text: str, chars: int) -> str:
    """At most `chars` characters and _MAX_BYTES bytes of UTF-8, cut on a character."""
    text = text[:chars]
    while len(text.encode("utf-8", "surrogatepass")) > _MAX_BYTES:
        text = text[:-1]
    return text


def safe_dirname(instance_name: str) -> str:
    """A folder name for an instance that is safe on Linux, macOS and Windows.

    The result is at most MAX_DIRNAME characters (and 160 bytes of UTF-8), contains none
    of `/ \\ : * ? " < > |` nor control characters, does not end in a dot or a space, is
    not a reserved Windows device name (CON, NUL, COM1, ...) and is never empty, `.` or
    `..`. A name that needs no change is returned as is (`hero`, `sweep[style=oil]`).
    Whenever anything was replaced or cut, `-` and 10 hex digits of the sha256 of the
    whole name are appended, so distinct names keep distinct folders and the same name
    always gets the same folder. Names differing only in letter case are not told apart
    (macOS and Windows fold case); step names are expected to differ by more than case.
    """
    name = unicodedata.normalize("NFC", instance_name)
    changed = name != instance_name
    text = "".join("_" if _bad_char(ch) else ch for ch in name)
    changed |= text != name
    stripped = text.lstrip(" ").rstrip(" .")
    if stripped.startswith("."):  # no hidden folders, and never `.` or `..`
        stripped = "_" + stripped[1:]
    changed |= stripped != text
    text = stripped
    if text.split(".", 1)[0].rstrip(" ").upper() in _RESERVED:
        text, changed = "_" + text, True
    if not text or _SUFFIXED.search(text):
        changed = True
    if len(text) > MAX_DIRNAME or len(text.encode("utf-8", "surrogatepass")) > _MAX_BYTES:
        changed = True
    if not changed:
        return text
    digest = hashlib.sha256(instance_name.encode("utf-8", "surrogatepass")).hexdigest()
    head = _truncate(text, MAX_DIRNAME - 1 - _HASH_LEN).rstrip(" .")
    return f"{head or '_'}-{digest[:_HASH_LEN]}"


def unsafe_name_reason(value: str) -> str | None:
    """Why a matrix value (or any name part) cannot be used, or None when it can.

    Meant for validation before anything is paid: NUL, other control characters, line
    breaks and lone surrogates are refused. Length and path characters are not reasons:
    `safe_dirname` deals with those.
    """
    for index, ch in enumerate(value):
        code = ord(ch)
        if code == 0:
            return f"contains a NUL character at position {index + 1}"
        category = unicodedata.category(ch)
        if category == "Cc":
            return f"contains the control character U+{code:04X} at position {index + 1}"
        if category in ("Zl", "Zp"):
            return f"contains a line separator U+{code:04X} at position {index + 1}"
        if category == "Cs":
            return f"contains a lone surrogate U+{code:04X} at position {index + 1}"
    return None


def shown(text: str) -> str:
    """`text` as civflow prints it: control characters, bidirectional overrides and
    isolates (U+202A-202E, U+2066-2069) and other invisible format characters become
    `\\uXXXX` escapes, so a name from a pipeline or a server can neither reorder what a
    terminal, a comment or a page shows around it nor hide part of itself."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else
                   f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}"
                   for ch in text)


_MARKDOWN = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
             "|": "&#124;", "\\": "&#92;", "`": "&#96;", "*": "&#42;", "_": "&#95;",
             "[": "&#91;", "]": "&#93;", "~": "&#126;", "@": "&#64;", "#": "&#35;",
             "!": "&#33;", ":": "&#58;", "$": "&#36;", "\n": " ", "\r": " ", "\t": " "}


def markdown_text(text: str) -> str:
    """`text` safe anywhere in GitHub Markdown, a table cell included: no formatting,
    no links, no mentions, no HTML, one line; invisible characters `shown` escaped."""
    return "".join(_MARKDOWN.get(c, c) for c in shown(text.replace("\n", " ")
                                                      .replace("\r", " ").replace("\t", " ")))


def blob_id_ok(blob_id: object) -> bool:
    """Whether `blob_id` has the strict shape civflow accepts (letters, digits, `_`, `-`,
    one optional `.ext`; at most 128 + 11 characters)."""
    return isinstance(blob_id, str) and _BLOB_ID.match(blob_id) is not None


def check_blob_id(blob_id: object) -> str:
    """`blob_id` itself when `blob_id_ok`, else ApiProtocolError (nothing is written)."""
    if not blob_id_ok(blob_id):
        shown = repr(blob_id)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise ApiProtocolError(
            f"the API sent a blob id civflow will not use: {shown}",
            hint="blob ids are letters, digits, '_' and '-' with one optional extension; "
                 "this answer did not come from a well-behaved Civitai server")
    assert isinstance(blob_id, str)
    return blob_id


def safe_extension(text: object) -> str | None:
    """`text` lowercased when it is 1-10 ASCII letters or digits, else None."""
    if not isinstance(text, str):
        return None
    lowered = text.lower()
    return lowered if _EXTENSION.match(lowered) else None


def contained(base: Path, path: Path) -> Path:
    """`path`, after checking that it resolves (symlinks followed) inside `base`.

    Raises UnsafePath otherwise; call it right before writing. `base` itself does not
    count as inside: civflow writes files under a folder, never the folder.
    """
    root = Path(os.path.realpath(base))
    target = Path(os.path.realpath(path))
    if target == root or not target.is_relative_to(root):
        raise UnsafePath(path=str(path), base=str(base))
    return path


# -- the files and fields that name things ---------------------------------------------

# Presigned URLs expire and differ on every GET: they never reach a lockfile or a key.
URL_FIELDS = frozenset({"url", "urlExpiresAt", "previewUrl", "previewUrlExpiresAt"})


def strip_urls(output: Any) -> Any:
    """A copy of an API output without the fields that hold presigned URLs, at any depth."""
    if isinstance(output, Mapping):
        return {k: strip_urls(v) for k, v in output.items() if k not in URL_FIELDS}
    if isinstance(output, list | tuple):
        return [strip_urls(v) for v in output]
    return output


def lockfile_path_for(pipeline: Path) -> Path:
    """`x/hero-shot.yaml` → `x/hero-shot.lock.json`."""
    name = pipeline.name
    for suffix in (".yaml", ".yml"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return pipeline.with_name(f"{name}.lock.json")
