"""The public Python API: its surface, and a notebook-style session against the emulator."""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import civflow
from civflow.client import CivitaiClient, WorkflowState
from civflow.emulator import EmulatorConfig, RunningEmulator, start_emulator
from civflow.errors import SpendingRefused, UsageError
from civflow.runner.lock import acquire_run_lock
from civflow.runner.state import project_root

GOLDEN = Path(__file__).resolve().parent / "golden"
KEY = "sk-test-python-api-0123456789"

PIPELINE = """\
version: 1
name: notebook
vars:
  subject: a red fox
steps:
  hero:
    type: imageGen
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: urn:air:sdxl:checkpoint:civitai:101055@128078
      prompt: "{{ subject }}"
      width: 256
      height: 256
      steps: 10
  note:
    type: echo
    input:
      message: "{{ steps.hero.output.images[0].id }}"
"""


def test_the_public_surface_is_curated() -> None:
    assert civflow.__all__ == sorted(civflow.__all__)
    for name in civflow.__all__:
        assert hasattr(civflow, name), name
    for name in ("load", "loads", "plan", "estimate", "aestimate", "run", "arun"):
        function = getattr(civflow, name)
        assert function.__doc__ and ">>>" in function.__doc__, name
        # Every parameter is named and typed: editors and mypy check each call.
        parameters = list(inspect.signature(function).parameters.values())
        assert all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in parameters)
        assert set(typing.get_type_hints(function)) == {p.name for p in parameters} | {"return"}
    assert inspect.iscoroutinefunction(civflow.arun)
    assert inspect.iscoroutinefunction(civflow.aestimate)
    assert list(inspect.signature(civflow.plan).parameters) == [
        "checked", "force", "reroll", "only", "retry_failed", "emulator"]
    assert list(inspect.signature(civflow.loads).parameters) == [
        "text", "path", "vars", "vars_files"]
    # What a run reports is typed and importable from the top.
    assert civflow.Event.__module__ == "civflow.runner.events"
    assert {civflow.Phase.LOCKED, civflow.Phase.RESUMED, civflow.Phase.REMOTE} == {
        phase for phase in civflow.Phase if phase.of_run}
    assert civflow.Decision.NEW.value == "new"


@pytest.mark.parametrize(("sync", "coroutine"), [("run", "arun"), ("estimate", "aestimate")])
def test_each_synchronous_twin_has_its_coroutines_signature(sync: str, coroutine: str) -> None:
    """Every keyword, its type and its default: the twins cannot drift apart."""
    twin, original = getattr(civflow, sync), getattr(civflow, coroutine)
    assert inspect.signature(twin) == inspect.signature(original)
    assert typing.get_type_hints(twin) == typing.get_type_hints(original)
    assert not inspect.iscoroutinefunction(twin)


def test_statuses_are_a_str_enum() -> None:
    assert [s.value for s in civflow.Status] == [
        "succeeded", "cached", "failed", "expired", "canceled", "skipped", "not-run"]
    assert civflow.Status.NOT_RUN == "not-run" and civflow.Status("failed").failed
    assert f"{civflow.Status.CACHED:<7}|" == "cached |" and str(civflow.Status.SKIPPED) == "skipped"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / ".civflow").mkdir()
    (tmp_path / "notebook.yaml").write_text(PIPELINE, encoding="utf-8")
    monkeypatch.setenv("CIVFLOW_EMULATOR_TIME_SCALE", "0")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_notebook_session_runs_twice_and_inside_a_running_loop(folder: Path) -> None:
    checked = civflow.load(folder / "notebook.yaml", vars={"subject": "a blue fox"})
    assert civflow.plan(checked).counts() == {"new": 2}
    assert civflow.estimate(checked).total > 0
    first = civflow.run(checked, emulator=True)
    assert first.count("succeeded") == 2 and first.spent > 0
    assert first.results["hero"].status is civflow.Status.SUCCEEDED
    assert first.count(civflow.Status.SUCCEEDED) == 2
    (image,) = first.files["hero"]
    assert image.is_file() and image.is_relative_to(folder / "out")
    assert "hero" in first.table() and "spent" in str(first)
    # A second call (civflow.runner used to be shadowed by the civflow.runner package) and
    # the plan for the emulator reads its previews: everything is cached. For the real
    # API nothing is: a preview is never paid work.
    assert civflow.plan(checked, emulator=True).counts() == {"cached": 2}
    assert civflow.plan(checked).counts() == {"new": 2}
    again = civflow.run(checked, emulator=True)
    assert again.count("cached") == 2 and again.spent == 0

    async def cell() -> civflow.RunResult:
        # Jupyter runs cells inside a loop: the synchronous call must still work.
        return civflow.run(checked, emulator=True, force=["note"])

    inside = asyncio.run(cell())
    assert inside.results["note"].status == "succeeded"
    assert asyncio.run(civflow.arun(checked, emulator=True)).count("cached") == 2


def test_the_real_api_is_never_called_without_consent(folder: Path) -> None:
    checked = civflow.load(folder / "notebook.yaml")
    with pytest.raises(SpendingRefused, match="needs consent"):
        civflow.run(checked)


def test_batch_packs_a_notebook_run_like_the_flag(folder: Path) -> None:
    """`batch=` does what `run --batch N` does: the fused chain is one workflow."""
    checked = civflow.load(folder / "notebook.yaml")
    result = civflow.run(checked, emulator=True, batch=5)
    assert result.count("succeeded") == 2
    lock = (folder / ".civflow" / "previews" / "notebook.lock.json").read_text(encoding="utf-8")
    ids = {line.split('"workflowId": "')[1].split('"')[0]
           for line in lock.splitlines() if '"workflowId"' in line}
    assert len(ids) == 1, ids
    with pytest.raises(civflow.errors.UsageError, match="from 1 to 100"):
        civflow.run(checked, emulator=True, batch=0)


def test_one_channel_hears_every_event_of_a_run(folder: Path) -> None:
    """`on_event` hears the run's own events (here: waiting for another run's lock) and
    each instance's, typed; nothing else is needed to follow a run."""
    checked = civflow.load(folder / "notebook.yaml")
    other = acquire_run_lock(checked.spec, project_root(checked.spec))
    heard: list[civflow.Event] = []

    def on_event(event: civflow.Event) -> None:
        heard.append(event)
        if event.phase is civflow.Phase.LOCKED:
            other.release()  # the other run ends: this one goes on

    result = civflow.run(checked, emulator=True, wait=True, on_event=on_event)
    assert result.count("succeeded") == 2
    assert all(isinstance(event, civflow.Event) for event in heard)
    locked, *rest = heard
    assert locked.instance == "" and locked.phase is civflow.Phase.LOCKED and locked.detail
    assert not any(event.phase.of_run for event in rest)
    ended = {event.instance: event.phase for event in rest if event.phase.final}
    assert ended == {"hero": civflow.Phase.SUCCEEDED, "note": civflow.Phase.SUCCEEDED}
    # Files are fetched for the picture; the text result has none to fetch.
    fetching = {event.instance for event in rest if event.phase is civflow.Phase.DOWNLOADING}
    assert fetching == {"hero"}
    with pytest.raises(TypeError, match="reporter"):
        civflow.run(checked, emulator=True, reporter=print)  # type: ignore[call-arg]


@pytest.fixture
def served() -> Iterator[RunningEmulator]:
    """An emulator served on loopback, as `civflow emulator` serves one."""
    with start_emulator(EmulatorConfig(time_scale=0, api_key=KEY)) as running:
        yield running


class Counting:
    """A backend of one's own: a client's transport, counting what it submits."""

    def __init__(self, inner: CivitaiClient) -> None:
        self.inner = inner
        self.submitted = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def submit(self, template: Mapping[str, Any], *, wait: int = 0,
                     whatif: bool = False) -> WorkflowState:
        self.submitted += not whatif
        return await self.inner.submit(template, wait=wait, whatif=whatif)


def test_arun_uses_the_backend_it_is_given_and_leaves_it_open(
        folder: Path, served: RunningEmulator) -> None:
    checked = civflow.load(folder / "notebook.yaml")

    async def session() -> None:
        async with CivitaiClient(served.url, KEY) as client:
            backend = Counting(client)
            with pytest.raises(SpendingRefused, match="needs consent"):
                await civflow.arun(checked, backend=backend)
            first = await civflow.arun(checked, backend=backend, yes=True)
            # A served emulator says what it is: previews, never taken for paid work.
            assert first.preview and first.count(civflow.Status.SUCCEEDED) == 2
            assert backend.submitted == 1  # both steps, one batched workflow
            priced = await civflow.aestimate(checked, backend=backend, whatif=True,
                                             force=["hero"])
            assert priced.total > 0 and backend.submitted == 1
            # Still open: the caller's to close.
            workflow = first.results["hero"].workflow_id
            assert workflow is not None and (await client.get(workflow)).id == workflow

    asyncio.run(session())


def test_run_serves_one_backend_call_after_call(folder: Path, served: RunningEmulator) -> None:
    """From synchronous code a backend is driven on one loop of civflow's, so the same
    client (its connections belong to that loop) serves every call."""
    checked = civflow.load(folder / "notebook.yaml")
    client = CivitaiClient(served.url, KEY)
    try:
        assert civflow.run(checked, backend=client, yes=True).count("succeeded") == 2
        assert civflow.run(checked, backend=client, yes=True).count("cached") == 2
        assert civflow.estimate(checked, backend=client, whatif=True, force=["hero"]).total > 0
    finally:
        civflow._api._on_worker(client.aclose())


def test_the_emulator_or_a_backend_never_both(folder: Path, served: RunningEmulator) -> None:
    checked = civflow.load(folder / "notebook.yaml")
    client = CivitaiClient(served.url, KEY)  # never used: refused before any request
    with pytest.raises(UsageError, match=r"^pass either emulator=True or backend=…, not both$"):
        civflow.run(checked, emulator=True, backend=client)
    with pytest.raises(UsageError, match="not both"):
        civflow.estimate(checked, emulator=True, backend=client, whatif=True)
    with pytest.raises(UsageError, match="the backend holds its own key"):
        civflow.run(checked, backend=client, yes=True, api_key_file=folder / "key")


def test_loads_is_load_from_text(folder: Path) -> None:
    """The same Checked; the pipeline stands for <name>.yaml here, so a run of the text
    and of the file share one lockfile."""
    from_text = civflow.loads(PIPELINE, vars={"subject": "a blue fox"})
    from_file = civflow.load(folder / "notebook.yaml", vars={"subject": "a blue fox"})
    assert from_text.spec.path == Path("notebook.yaml")
    assert from_text.spec.vars == from_file.spec.vars and from_text.graph is not None
    assert civflow.run(from_text, emulator=True).count("succeeded") == 2
    assert civflow.plan(from_file, emulator=True).counts() == {"cached": 2}
    elsewhere = civflow.loads(PIPELINE, path="drafts/notebook.yaml")
    assert elsewhere.spec.lockfile_path == Path("drafts/notebook.lock.json")


@pytest.mark.parametrize(("text", "expected"), [
    ("version: 1\nname: [\n",
     "<string>:3:1: invalid YAML: did not find expected node content"),
    ("", "<string>:1:1: the pipeline file is empty\n"
         "  hint: start with 'version: 1', a 'name:' and a 'steps:' mapping"),
    ("version: 1\nname: x\x00\n",
     "<string>:1:1: the text contains a NUL byte\n  hint: is this a binary file?"),
    ("version: 1\nname: \ud800\n",
     "<string>:2:7: the text holds U+D800, a lone surrogate, not a character\n"
     "  hint: it comes from bytes decoded with errors='surrogateescape'; decode them as "
     "UTF-8"),
], ids=["syntax", "empty", "nul", "surrogate"])
def test_loads_locates_what_is_wrong_with_the_text(text: str, expected: str) -> None:
    with pytest.raises(civflow.PipelineInvalid) as caught:
        civflow.loads(text)
    assert caught.value.render() == expected


def test_loads_refuses_what_is_not_text() -> None:
    with pytest.raises(UsageError, match="a pipeline's text is a str, not bytes"):
        civflow.loads(b"version: 1\n")  # type: ignore[arg-type]
    with pytest.raises(UsageError) as caught:
        civflow.loads(PIPELINE.replace("subject", "topic"), vars={"colour": "red"})
    assert caught.value.render() == ("unknown variable 'colour' (known: topic)\n"
                                     "  hint: declare it under 'vars:' in <string> first")


def _is_text(path: Path) -> bool:
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return False  # bytes that are not UTF-8: a str never holds them
    return True


GOLDEN_CASES = sorted(p.name for p in GOLDEN.glob("*.yaml") if _is_text(p))


def _said(load: Any) -> str:
    try:
        checked = load()
    except civflow.CivflowError as exc:
        return exc.render()
    return "\n".join(w.render() for w in checked.warnings)


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_loads_says_what_load_says_of_each_golden(name: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Word for word, at `<string>` instead of the file (or at the path given)."""
    monkeypatch.chdir(GOLDEN)
    text = (GOLDEN / name).read_text(encoding="utf-8")
    from_file = _said(lambda: civflow.load(name))
    assert _said(lambda: civflow.loads(text, path=name)) == from_file.replace(
        "the file", "the text")
    assert _said(lambda: civflow.loads(text)) == from_file.replace(
        "the file", "the text").replace(f"{name}:", "<string>:")


def test_no_public_name_is_also_a_submodule() -> None:
    """`import civflow.plan as p` once gave the function while `civflow.plan` also named
    a module: the implementation modules have names of their own (planning, loading)."""
    import importlib.util

    for name in civflow.__all__:
        assert importlib.util.find_spec(f"civflow.{name}") is None, name
    assert callable(civflow.plan) and callable(civflow.load)
