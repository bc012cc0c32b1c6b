"""Where the remote is configured: civflow.toml, [tool.civflow.remote] in pyproject.toml,
and $CIVFLOW_REMOTE over both; bad values are located errors; credentials never enter."""

from __future__ import annotations

from pathlib import Path

import pytest

from civflow.errors import PipelineInvalid
from civflow.remote import load_config, redact


def test_no_config_means_no_remote(tmp_path: Path) -> None:
    """Promise: a project without a remote plans and runs exactly as before."""
    assert load_config(tmp_path, {}) is None


def test_civflow_toml_gives_url_options_push_and_jobs(tmp_path: Path) -> None:
    (tmp_path / "civflow.toml").write_text(
        '[remote]\nurl = "s3://team-bucket/civflow"\npush = true\njobs = 4\ntimeout = 20\n'
        '[remote.options]\nendpoint_url = "http://127.0.0.1:9000"\n', encoding="utf-8")
    config = load_config(tmp_path, {})
    assert config is not None
    assert (config.url, config.push, config.jobs, config.timeout) == (
        "s3://team-bucket/civflow", True, 4, 20.0)
    assert config.options == {"endpoint_url": "http://127.0.0.1:9000"}
    assert config.protocol == "s3"


def test_pyproject_tool_table_and_a_relative_folder(tmp_path: Path) -> None:
    """Promise: a plain relative path is a folder relative to the project root."""
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.civflow.remote]\nurl = "shared/objects"\n',
        encoding="utf-8")
    config = load_config(tmp_path, {})
    assert config is not None
    assert config.url == (tmp_path / "shared" / "objects").resolve().as_uri()
    assert config.push is False


def test_the_environment_overrides_the_file(tmp_path: Path) -> None:
    """Promise: $CIVFLOW_REMOTE wins; options of another kind of storage are dropped."""
    (tmp_path / "civflow.toml").write_text(
        '[remote]\nurl = "s3://a/b"\npush = true\n[remote.options]\n'
        'endpoint_url = "http://127.0.0.1:9000"\n', encoding="utf-8")
    config = load_config(tmp_path, {"CIVFLOW_REMOTE": "file:///mnt/team"})
    assert config is not None
    assert config.url == "file:///mnt/team" and config.options == {} and config.push
    same_kind = load_config(tmp_path, {"CIVFLOW_REMOTE": "s3://other/prefix"})
    assert same_kind is not None and same_kind.options == {
        "endpoint_url": "http://127.0.0.1:9000"}


@pytest.mark.parametrize(("text", "line", "words"), [
    ('[remote]\nurl = "s3://a/b"\njobs = 0\n', 3, "jobs must be"),
    ('[remote]\nurl = "s3://a/b"\npush = "yes"\n', 3, "push must be"),
    ('[remote]\nurl = "s3://a/b"\ntimeout = 0\n', 3, "timeout must be"),
    ('[remote]\nurl = "s3://a/b"\ntimeout = nan\n', 3, "timeout must be"),
    ('[remote]\nurl = "s3://a/b"\ntimeout = "1m"\n', 3, "timeout must be"),
    ('[remote]\nurl = "s3://a/b"\nbucket = "x"\n', 3, "unknown remote setting"),
    ('[remote]\npush = true\n', 1, "needs a url"),
    ('[remote]\nurl = "s3://a/b"\nsecret_access_key = "x"\n', 3, "looks like a credential"),
    ('[remote]\nurl = "s3://a/b"\n[remote.options]\nkey = "AKIA"\n', 4, "looks like a credential"),
    ('[remote]\nurl = "s3://user:pw@host/b"\n', 2, "user name or password"),
    ('[remote\nurl = 1\n', 1, "not valid TOML"),
])
def test_bad_values_are_located_errors(tmp_path: Path, text: str, line: int,
                                       words: str) -> None:
    """Promise: bad input gets file:line:col, the line and a hint, never a traceback;
    credentials are refused in the config file (they come from the storage library)."""
    path = tmp_path / "civflow.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PipelineInvalid) as caught:
        load_config(tmp_path, {})
    diagnostic = caught.value.diagnostics[0]
    assert words in diagnostic.message
    assert diagnostic.location is not None and diagnostic.location.file == str(path)
    assert diagnostic.location.line == line
    assert diagnostic.hint
    if "credential" in words or "password" in words:
        assert diagnostic.source_line is None  # the line may hold the secret: not echoed
        assert "AKIA" not in caught.value.render() and ":pw@" not in caught.value.render()
    else:
        assert diagnostic.source_line is not None


def test_urls_are_printed_without_passwords() -> None:
    assert redact("https://me:hunter2@example.com/x") == "https://***@example.com/x"
    assert redact("s3://bucket/prefix") == "s3://bucket/prefix"
