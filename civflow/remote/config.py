"""Where a project's remote is: `civflow.toml`, `[tool.civflow]` in pyproject.toml, or the env.

    # civflow.toml, at the project's root (beside .civflow/ or .git)
    [remote]
    url = "s3://team-bucket/civflow"   # s3://, gs://, az://…; or file:///mnt/team/civflow
    push = true                        # `civflow run` pushes what it produced
    jobs = 16                          # transfers in flight
    timeout = 60                       # seconds to wait for an answer (a listing, a read)
    [remote.options]                   # handed to the fsspec filesystem as is (cloud)
    endpoint_url = "http://127.0.0.1:9000"

The same table may stand in pyproject.toml as `[tool.civflow.remote]`; civflow.toml
wins when both exist. `CIVFLOW_REMOTE` replaces the URL (and drops the options when
it names another kind of storage). Credentials never belong here: they come from the
storage library's own sources (AWS_* variables, a profile, an instance role), and a
config that holds one is refused without echoing it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from civflow.errors import Diagnostic, FileAccessError, Location, PipelineInvalid

__all__ = ["ENV", "MAX_JOBS", "RemoteConfig", "find_config", "load_config", "redact"]

ENV = "CIVFLOW_REMOTE"
MAX_JOBS = 256
DEFAULT_JOBS = 16
# Seconds one listing of the remote may take in all (retries included): past it, plan and
# run go on without the remote and say so, instead of hanging on a server that never
# answers. Generous: a listing of a large remote pages through thousands of objects.
DEFAULT_TIMEOUT = 60.0
MAX_TIMEOUT = 3600.0
# Option names that carry secrets in s3fs, gcsfs, adlfs and fsspec's own filesystems.
_SECRET_WORDS = ("key", "secret", "token", "password", "passwd", "credential", "sas",
                 "connection_string", "session")
_SECRET_OK = {"endpoint_url", "region_name", "profile", "use_ssl", "requester_pays"}
_HINT = ("credentials come from the storage library's usual sources: AWS_ACCESS_KEY_ID and "
         "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) for S3, GOOGLE_APPLICATION_CREDENTIALS "
         "for GCS, AZURE_STORAGE_* for Azure")
_TABLE_HINT = 'a remote is configured as [remote] url = "s3://bucket/prefix" (see civflow.toml)'


@dataclass(frozen=True)
class RemoteConfig:
    """A validated remote: its fsspec URL, storage options, push policy and parallelism.

    `source` says where the URL came from (a file, or `$CIVFLOW_REMOTE`), for messages.
    """

    url: str
    options: Mapping[str, Any] = field(default_factory=dict)
    push: bool = False
    jobs: int = DEFAULT_JOBS
    source: str = ENV
    timeout: float = DEFAULT_TIMEOUT

    @property
    def protocol(self) -> str:
        return _protocol(self.url)


def redact(url: str) -> str:
    """The URL without any user:password part, safe to print."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=f"***@{host}").geturl()


def _protocol(url: str) -> str:
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", url)
    return match.group(1).lower() if match else "file"


def find_config(root: Path) -> tuple[Path, Mapping[str, Any]] | None:
    """The remote table of `root/civflow.toml` (`[remote]`) or `root/pyproject.toml`
    (`[tool.civflow.remote]`), with the file it came from; None when neither has one."""
    toml = root / "civflow.toml"
    if toml.is_file():
        data = _read(toml)
        table = data.get("remote")
        if table is not None:
            return toml, _table(table, toml, "remote", "[remote]")
    project = root / "pyproject.toml"
    if project.is_file():
        data = _read(project)
        tool = data.get("tool")
        section = tool.get("civflow") if isinstance(tool, Mapping) else None
        table = section.get("remote") if isinstance(section, Mapping) else None
        if table is not None:
            return project, _table(table, project, "remote", "[tool.civflow.remote]")
    return None


def load_config(root: Path, environ: Mapping[str, str] | None = None) -> RemoteConfig | None:
    """The project's remote, or None when none is configured (then nothing is pushed or
    pulled and planning ignores remotes). Bad values raise a located PipelineInvalid."""
    env = os.environ if environ is None else environ
    found = find_config(root)
    override = env.get(ENV, "").strip()
    if found is None and not override:
        return None
    config = _parse(*found, root) if found is not None else None
    if override:
        _check_url(override, None)
        url = _resolve(override, root)
        keep = config is not None and config.protocol == _protocol(url)
        return RemoteConfig(url=url, options=config.options if config and keep else {},
                            push=config.push if config else False,
                            jobs=config.jobs if config else DEFAULT_JOBS, source=ENV,
                            timeout=config.timeout if config else DEFAULT_TIMEOUT)
    return config


def _read(path: Path) -> dict[str, Any]:
    import tomllib  # here: its parser takes ~20 ms to import, and most projects have no file

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise FileAccessError(path=str(path), reason=reason or str(exc)) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        line, col = (int(where.group(1)), int(where.group(2))) if where else (1, 1)
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise PipelineInvalid([Diagnostic(
            f"not valid TOML: {message}", Location(str(path), line, col),
            hint="see https://toml.io for the syntax", source_line=_line(text, line))]) from exc


def _line(text: str, line: int) -> str | None:
    lines = text.splitlines()
    return lines[line - 1] if 0 < line <= len(lines) else None


def _fail(path: Path | None, key: str | None, message: str, hint: str, *,
          secret: bool = False) -> PipelineInvalid:
    """A located error at the line that sets `key` (or the table), in `path`; the line
    itself is left out when it may hold a credential (`secret`)."""
    if path is None:
        return PipelineInvalid([Diagnostic(f"${ENV}: {message}", None, hint=hint)])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = ""
    line_no, col = 1, 1
    lines = text.splitlines()
    if key is not None:
        pattern = re.compile(rf'^\s*(["\']?){re.escape(key)}\1\s*=')
        for i, line in enumerate(lines):
            if pattern.match(line):
                line_no, col = i + 1, len(line) - len(line.lstrip()) + 1
                break
    else:
        for i, line in enumerate(lines):
            if re.match(r"^\s*\[(tool\.civflow\.)?remote\]", line):
                line_no = i + 1
                break
    shown = None if secret else _line(text, line_no)
    return PipelineInvalid([Diagnostic(message, Location(str(path), line_no, col), hint=hint,
                                       source_line=shown)])


def _table(value: Any, path: Path, key: str, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(path, key, f"{name} must be a table", _TABLE_HINT)
    return value


def _secret(name: str) -> bool:
    lowered = name.lower()
    return lowered not in _SECRET_OK and any(word in lowered for word in _SECRET_WORDS)


def _check_options(options: Mapping[str, Any], path: Path, depth: int = 0) -> None:
    if depth > 4:
        raise _fail(path, None, "remote options nest too deeply", _TABLE_HINT)
    for name, value in options.items():
        if _secret(str(name)):
            raise _fail(path, str(name), f"'{name}' looks like a credential; civflow does not "
                        "read credentials from its config file", _HINT, secret=True)
        if isinstance(value, Mapping):
            _check_options(value, path, depth + 1)


def _check_url(url: str, path: Path | None) -> None:
    parts = urlsplit(url) if "://" in url else None
    if parts is not None and (parts.username or parts.password):
        raise _fail(path, "url", "the remote URL holds a user name or password; civflow "
                    "never stores or prints credentials", _HINT, secret=True)
    if not url.strip():
        raise _fail(path, "url", "the remote URL is empty", _TABLE_HINT)


def _resolve(url: str, root: Path) -> str:
    """A plain path is a local folder; a relative one is relative to the project root."""
    if "://" in url:
        return url
    folder = Path(url).expanduser()
    return (folder if folder.is_absolute() else root / folder).resolve().as_uri()


def _parse(path: Path, table: Mapping[str, Any], root: Path) -> RemoteConfig:
    known = {"url", "push", "jobs", "timeout", "options"}
    for name in table:
        if name not in known:
            hint = f"known keys: {', '.join(sorted(known))}"
            if _secret(str(name)):
                raise _fail(path, str(name), f"'{name}' looks like a credential; civflow does "
                            "not read credentials from its config file", _HINT, secret=True)
            raise _fail(path, str(name), f"unknown remote setting '{name}'", hint)
    url = table.get("url")
    if not isinstance(url, str):
        raise _fail(path, "url" if "url" in table else None,
                    "the remote needs a url (a string)", _TABLE_HINT)
    _check_url(url, path)
    push = table.get("push", False)
    if not isinstance(push, bool):
        raise _fail(path, "push", "push must be true or false", 'e.g. push = true')
    jobs = table.get("jobs", DEFAULT_JOBS)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= MAX_JOBS:
        raise _fail(path, "jobs", f"jobs must be a whole number from 1 to {MAX_JOBS}",
                    f"e.g. jobs = {DEFAULT_JOBS}")
    timeout = table.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or \
            not 1 <= timeout <= MAX_TIMEOUT:
        raise _fail(path, "timeout", f"timeout must be a number of seconds from 1 to "
                    f"{MAX_TIMEOUT:g}", f"e.g. timeout = {DEFAULT_TIMEOUT:g}")
    options = table.get("options", {})
    if not isinstance(options, Mapping):
        raise _fail(path, "options", "options must be a table",
                    'e.g. [remote.options] endpoint_url = "http://127.0.0.1:9000"')
    _check_options(options, path)
    return RemoteConfig(url=_resolve(url, root), options=dict(options), push=push, jobs=jobs,
                        source=str(path), timeout=float(timeout))
