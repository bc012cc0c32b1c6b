"""`Producers`: an input that holds an upstream result is named by the instance that
made it, whichever form it takes (token, blob id, URL) and wherever it is recorded."""

from __future__ import annotations

from civflow.producers import BLOB_TOKEN, Producers, upstream_changed

OLD = BLOB_TOKEN + "1" * 64
NEW = BLOB_TOKEN + "2" * 64
OTHER = BLOB_TOKEN + "3" * 64


def _output(token: str, blob_id: str) -> dict[str, object]:
    return {"images": [{"id": blob_id, "url": token, "type": "image"}]}


def test_the_same_instance_remade_reads_as_upstream_changed() -> None:
    made = Producers([("shot[mug-marble]", _output(NEW, "B.jpeg")),
                      ("shot[cap-linen]", _output(OTHER, "C.jpeg"))])
    made.add("shot[mug-marble]", _output(OLD, "A.jpeg"))  # an earlier result
    assert made.explain("image", OLD, NEW) == "upstream shot[mug-marble] changed"
    assert made.explain("images", [OLD], [NEW]) == upstream_changed("shot[mug-marble]")
    # Another instance read now, or a value written by hand on one side.
    assert made.explain("image", OLD, OTHER) == \
        "image reads shot[cap-linen] instead of shot[mug-marble]"
    assert made.explain("image", "https://example.com/a.png", NEW) == \
        "image reads shot[mug-marble]"
    assert made.explain("image", NEW, "https://example.com/a.png") == \
        "image no longer reads shot[mug-marble]"
    # Nothing an instance made: an ordinary field change.
    assert made.explain("prompt", "a mug", "a cup") is None


def test_an_output_no_longer_recorded_still_reads_as_upstream_changed() -> None:
    made = Producers([("shot[mug-marble]", _output(NEW, "B.jpeg"))])
    assert made.explain("image", BLOB_TOKEN + "9" * 64, NEW) == \
        "upstream shot[mug-marble] changed"


def test_blob_ids_urls_and_tokens_inside_text_are_found() -> None:
    made = Producers([("shot[mug-marble]", _output(NEW, "01M8ZY.jpeg"))])
    assert made.of("01M8ZY.jpeg") == "shot[mug-marble]"
    assert made.of("https://api.example/v2/consumer/blobs/01M8ZY.jpeg?sig=x") == \
        "shot[mug-marble]"
    assert made.of({"nodes": {"3": {"inputs": {"image": f"see {NEW} here"}}}}) == \
        "shot[mug-marble]"
    # A field named `id` that is not a blob's (no URL beside it) names nothing.
    other = Producers([("echo", {"id": "1", "message": "hi"})])
    assert other.of("1") is None


def test_earlier_results_are_read_only_when_needed() -> None:
    asked: list[int] = []

    def earlier() -> list[tuple[str, dict[str, object]]]:
        asked.append(1)
        return [("shot[mug-marble]", _output(OLD, "A.jpeg"))]

    made = Producers([("shot[mug-marble]", _output(NEW, "B.jpeg"))], more=earlier)
    assert made.of(NEW) == "shot[mug-marble]" and made.of("a prompt") is None
    # The usual re-made upstream: its new output is current, the old one earlier.
    assert made.explain("image", OLD, NEW) == "upstream shot[mug-marble] changed"
    assert asked == []
    assert made.of(OLD) == "shot[mug-marble]" and made.of(OLD) == "shot[mug-marble]"
    assert asked == [1]


def test_current_results_win_over_earlier_ones() -> None:
    made = Producers()
    made.add_refs("shot[new-name]", [NEW])
    made.add_refs("shot[old-name]", [NEW])
    assert made.of(NEW) == "shot[new-name]"
    assert made.named({"image": NEW, "prompt": "x"}) == {NEW: "shot[new-name]"}
