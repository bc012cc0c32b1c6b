"""Instance folder names are safe on every OS, stable and distinct; writes stay inside out/.

Guards: a matrix value of `../../x`, a NUL or 300 characters can neither leave out/
nor crash a paid run (trust issue case 3); blob ids from the server never form a path
(case 2).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from civflow.errors import ApiProtocolError, UnsafePath
from civflow.names import (
    MAX_DIRNAME,
    blob_id_ok,
    check_blob_id,
    contained,
    safe_dirname,
    safe_extension,
    unsafe_name_reason,
)

_RESERVED = re.compile(r"^(CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³])(\..*)?$", re.IGNORECASE)


def _portable(name: str) -> None:
    """Every rule a folder name must follow on Linux, macOS and Windows."""
    assert name and name not in (".", "..")
    assert len(name) <= MAX_DIRNAME
    assert len(name.encode("utf-8")) <= 255
    assert not set(name) & set('/\\:*?"<>|')
    assert all(ord(ch) >= 32 and ord(ch) != 127 for ch in name)
    assert not name.endswith((".", " "))
    assert not _RESERVED.match(name)


@pytest.mark.parametrize("name", ["hero", "sweep[style=oil,seed=3]", "upscale[0]", "clip"])
def test_ordinary_names_are_kept_as_they_are(name: str) -> None:
    assert safe_dirname(name) == name


@pytest.mark.parametrize("name", [
    "../../etc", "..", ".", "a/b", "a\\b", "x\x00y", "CON", "con.txt", "nul", "COM1",
    "lpt9.png", "trailing.", "trailing ", " lead", "a:b*c?d\"e<f>g|h", "x" * 300,
    "é" * 200, "tab\there", "line\nbreak", "\u2028", "", "hero-0123456789",
])
def test_hostile_names_become_portable_and_get_a_hash(name: str) -> None:
    safe = safe_dirname(name)
    _portable(safe)
    assert re.search(r"-[0-9a-f]{10}$", safe), safe
    assert safe == safe_dirname(name)  # stable


def test_a_long_matrix_value_is_cut_but_stays_distinct() -> None:
    first = safe_dirname("sweep[prompt=" + "a" * 300 + "]")
    second = safe_dirname("sweep[prompt=" + "a" * 299 + "b]")
    assert first != second and len(first) <= MAX_DIRNAME
    assert first.startswith("sweep[prompt=aaa")


def test_names_equal_after_replacement_keep_distinct_folders() -> None:
    names = ["a/b", "a\\b", "a:b", "a_b", "a?b", "CON", "_CON", "x.", "x", "x ", ".x", "_x"]
    assert len({safe_dirname(n) for n in names}) == len(names)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(max_size=400))
def test_any_text_gives_a_portable_name(name: str) -> None:
    _portable(safe_dirname(name))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(max_size=120), st.text(max_size=120))
def test_distinct_names_give_distinct_folders(a: str, b: str) -> None:
    if a != b:
        assert safe_dirname(a) != safe_dirname(b)


def test_unsafe_name_reason_names_the_character() -> None:
    assert unsafe_name_reason("watercolor, dusk") is None
    assert unsafe_name_reason("../../x" + "y" * 300) is None  # safe_dirname copes with these
    assert unsafe_name_reason("a\x00b") == "contains a NUL character at position 2"
    assert unsafe_name_reason("a\x1bb") == \
        "contains the control character U+001B at position 2"
    assert unsafe_name_reason("a\u2028") == "contains a line separator U+2028 at position 2"


@pytest.mark.parametrize("blob_id", ["CQW4MKM51BSX2Z9B4Y46QNXQ50.jpeg", "blob_01HX-abc", "A"])
def test_blob_ids_of_the_real_service_pass(blob_id: str) -> None:
    assert blob_id_ok(blob_id) and check_blob_id(blob_id) == blob_id


@pytest.mark.parametrize("blob_id", [
    "../../../tmp/evil", "..", ".hidden", "a/b", "a\\b", "a.b.c", "a.jp/g", "a\x00",
    "x" * 200, "", "C:evil", 7, None,
])
def test_hostile_blob_ids_are_refused(blob_id: object) -> None:
    assert not blob_id_ok(blob_id)
    with pytest.raises(ApiProtocolError, match="blob id civflow will not use"):
        check_blob_id(blob_id)


def test_extensions_are_short_and_plain() -> None:
    assert safe_extension("JPEG") == "jpeg"
    assert safe_extension("jp/g") is None and safe_extension("") is None
    assert safe_extension("x" * 11) is None


def test_contained_refuses_escapes_and_symlinks_out(tmp_path: Path) -> None:
    base = tmp_path / "out"
    (base / "p").mkdir(parents=True)
    assert contained(base, base / "p" / "0.png") == base / "p" / "0.png"
    for bad in (base / ".." / "x", base / "p" / ".." / ".." / "x", base, tmp_path / "y"):
        with pytest.raises(UnsafePath, match="resolves outside"):
            contained(base, bad)
    os.symlink(tmp_path, base / "link")
    with pytest.raises(UnsafePath):
        contained(base, base / "link" / "x")


def test_shown_escapes_what_could_reorder_or_hide_text() -> None:
    from civflow.names import markdown_text, shown

    assert shown("shot[front-s11]") == "shot[front-s11]"
    assert shown("é 日本 ✓") == "é 日本 ✓"
    assert shown("a\u202eb\u2066c\u200bd\x1be") == "a\\u202eb\\u2066c\\u200bd\\u001be"
    assert shown("tab\tnl\n") == "tab\\u0009nl\\u000a"
    assert markdown_text("`x`|[y](z)\u202e") == "&#96;x&#96;&#124;&#91;y&#93;(z)&#92;u202e"
