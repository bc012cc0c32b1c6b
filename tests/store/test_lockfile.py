"""The lockfile: deterministic bytes, a faithful round trip, and clear errors when broken."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from civflow.errors import FileAccessError, PipelineInvalid
from civflow.names import lockfile_path_for, strip_urls
from civflow.store.lockfile import (
    Artifact,
    LockedInstance,
    Lockfile,
    plain,
)

SHA = "ab" * 32


def _entry(name: str = "hero", **changes: object) -> LockedInstance:
    fields: dict[str, object] = dict(
        instance=name, step=name.split("[")[0], type="imageGen", fingerprint="f" * 64,
        request={"input": {"prompt": "a fox", "seed": 42, "width": 1024}, "priority": "normal"},
        seed=42, workflow_id="0-20250201021434336", cost=10.5,
        completed_at="2025-02-01T02:15:14.795Z",
        output={"images": [{"id": "CQW4.jpeg", "width": 1024, "height": 1024,
                            "available": True}]},
        artifacts=(Artifact(blob_id="CQW4.jpeg", sha256=SHA, size=1234,
                            media_type="image/jpeg", width=1024, height=1024,
                            path="../out/hero-shot/hero/0.jpeg"),))
    fields.update(changes)
    return LockedInstance(**fields)  # type: ignore[arg-type]


def test_path_next_to_the_pipeline() -> None:
    assert lockfile_path_for(Path("pipelines/hero-shot.yaml")) == \
        Path("pipelines/hero-shot.lock.json")
    assert lockfile_path_for(Path("x/a.yml")) == Path("x/a.lock.json")


def test_round_trip_and_format(tmp_path: Path) -> None:
    lock = Lockfile("hero-shot", {"hero": _entry(), "upscale[0]": _entry("upscale[0]")})
    path = tmp_path / "hero-shot.lock.json"
    lock.save(path)
    text = path.read_text()
    assert text.endswith("}\n") and not text.endswith("\n\n")
    document = json.loads(text)
    assert document["schema"] == 2
    assert list(document) == sorted(document)
    entry = document["instances"]["hero"]
    assert {"workflowId", "completedAt", "artifacts"} <= set(entry)
    assert entry["artifacts"][0]["blobId"] == "CQW4.jpeg"
    assert entry["artifacts"][0]["mediaType"] == "image/jpeg"
    assert "\n  \"instances\": {\n" in text  # two-space indent
    assert Lockfile.load(path) == lock


def test_same_data_in_any_key_order_gives_the_same_bytes() -> None:
    one = Lockfile("p", {"a": _entry("a"), "b": _entry("b")})
    shuffled = _entry("a", request={"priority": "normal",
                                    "input": {"width": 1024, "seed": 42, "prompt": "a fox"}})
    two = Lockfile("p", {"b": _entry("b"), "a": shuffled})
    assert one.to_json() == two.to_json()


def test_urls_never_reach_the_file() -> None:
    output = {"images": [{"id": "x", "url": "https://h/b?sig=s", "urlExpiresAt": "t",
                          "previewUrl": "p", "previewUrlExpiresAt": "t", "width": 1}]}
    assert strip_urls(output) == {"images": [{"id": "x", "width": 1}]}
    text = Lockfile("p", {"a": _entry("a", output=output)}).to_json()
    assert "sig=" not in text and "url" not in text.lower().replace("blobid", "")


def test_missing_lockfile_is_none(tmp_path: Path) -> None:
    assert Lockfile.load(tmp_path / "nope.lock.json") is None


def test_unreadable_lockfile_is_a_file_access_error(tmp_path: Path) -> None:
    path = tmp_path / "x.lock.json"
    path.mkdir()
    with pytest.raises(FileAccessError, match=r"x\.lock\.json"):
        Lockfile.load(path)


def test_broken_json_points_at_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.lock.json"
    text = Lockfile("p", {"a": _entry("a")}).to_json()
    path.write_text(text.replace('"seed": 42,', '"seed": 42,,', 1))
    with pytest.raises(PipelineInvalid) as info:
        Lockfile.load(path)
    rendered = info.value.render()
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if ",," in t)
    assert rendered.startswith(f"{path}:{line}:")
    assert "broken lockfile" in rendered and "hint:" in rendered


@pytest.mark.parametrize(("edit", "words"), [
    (lambda d: d.update(schema=3), "schema: expected 1 or 2"),
    (lambda d: d["instances"]["hero"].pop("fingerprint"), "instances.hero.fingerprint"),
    (lambda d: d["instances"]["hero"].update(cost="ten"), "instances.hero.cost: expected a number"),
    (lambda d: d["instances"]["hero"]["artifacts"][0].update(sha256="xyz"),
     "instances.hero.artifacts[0].sha256: expected 64 lowercase hex digits"),
    (lambda d: d.update(instances=[]), "lockfile.instances: expected an object"),
])
def test_wrong_shape_is_a_clear_error(tmp_path: Path, edit: object, words: str) -> None:
    document = json.loads(Lockfile("p", {"hero": _entry()}).to_json())
    edit(document)  # type: ignore[operator]
    path = tmp_path / "p.lock.json"
    path.write_text(json.dumps(document, indent=2))
    with pytest.raises(PipelineInvalid) as info:
        Lockfile.load(path)
    assert words in str(info.value)
    assert str(path) in str(info.value)


def test_entry_dicts_round_trip_for_the_journal() -> None:
    entry = _entry()
    assert LockedInstance.from_dict(json.loads(json.dumps(entry.to_dict()))) == entry


def test_plain_gives_what_json_reads_back() -> None:
    """Promise: `plain` (the copy the journal and the lockfile hold) equals the value after
    a JSON round trip, whatever containers it was built from, and shares no container."""
    from types import MappingProxyType

    class Items(list[object]):  # a list of another type: still walked into
        pass

    inner = {"loras": ({"air": "x", "strength": 0.5},), "n": None, "on": True}
    value = {"input": MappingProxyType({"seed": 7, "nested": [inner, (1, 2.5)]}), 3: "three",
             "more": Items([MappingProxyType({"k": (1,)})])}
    copied = plain(value)
    assert copied == {"input": {"seed": 7, "nested": [
        {"loras": [{"air": "x", "strength": 0.5}], "n": None, "on": True}, [1, 2.5]]},
        "3": "three", "more": [{"k": [1]}]}
    assert type(copied["more"]) is list and type(copied["more"][0]) is dict
    assert copied == json.loads(json.dumps(copied))
    assert copied["input"]["nested"][0] is not inner
    assert plain("text") == "text" and plain(None) is None


def test_each_instance_is_one_line_so_a_change_to_one_is_a_one_line_diff() -> None:
    """A pull request that re-ran one instance of 200 shows one changed line."""
    names = [f"shot[seed={i}]" for i in range(200)]
    before = Lockfile("p", {n: _entry(n) for n in names})
    after = Lockfile("p", {**before.instances,
                           names[7]: _entry(names[7], fingerprint="e" * 64, cost=11.0)})
    old, new = before.to_json().splitlines(), after.to_json().splitlines()
    assert len(old) == len(new) < 2 * 200 + 10  # a blank line between instances
    changed = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
    assert len(changed) == 1 and changed[0][1].lstrip().startswith(json.dumps(names[7]))
    assert Lockfile.from_json(after.to_json(), "p.lock.json") == after


def test_a_broken_field_is_located_at_its_column_on_the_instance_line(tmp_path: Path) -> None:
    path = tmp_path / "p.lock.json"
    text = Lockfile("p", {"a": _entry("a"), "hero": _entry()}).to_json()
    path.write_text(text.replace('"cost": 10.5', '"cost": "ten"'))
    with pytest.raises(PipelineInvalid) as info:
        Lockfile.load(path)
    diagnostic = info.value.diagnostics[0]
    line = path.read_text().splitlines()[diagnostic.location.line - 1]
    assert line.lstrip().startswith('"a": ')  # the first broken entry, by name order
    assert line[diagnostic.location.col - 1:].startswith('"cost": ')


def test_a_checkpoint_writes_what_the_entries_hold_now() -> None:
    """Entries keep their JSON between checkpoints; a changed entry is a new entry, and
    the next checkpoint writes its new values."""
    first = _entry("hero", cost=1.0)
    before = Lockfile("p", {"hero": first}).to_json()
    assert json.loads(before)["instances"]["hero"]["cost"] == 1.0
    older = replace(first, fingerprint="0" * 64)
    after = Lockfile("p", {"hero": replace(first, cost=2.5)},
                     alternates={older.fingerprint: older}).to_json()
    document = json.loads(after)
    assert document["instances"]["hero"]["cost"] == 2.5
    # An earlier result rides on its instance's line (see the module docstring).
    (earlier,) = document["instances"]["hero"]["earlier"]
    assert earlier["cost"] == 1.0 and earlier["fingerprint"] == "0" * 64
    assert "instance" not in document["instances"]["hero"] and "instance" not in earlier
    assert after == Lockfile.from_json(after, "p.lock.json").to_json()  # read back, same text
