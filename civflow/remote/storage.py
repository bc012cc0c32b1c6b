"""A content-addressed remote: list, push and pull objects named by sha256.

A `file://` URL (or a plain path) is a folder on this machine, reached with the standard
library (`civflow.remote.local`): the base install needs no extra for it. Every other
URL goes through fsspec and its filesystem packages, which are optional extras:
`s3://` needs `civflow[s3]`, `gs://` `civflow[gcs]`, `az://` / `abfs://`
`civflow[azure]`. `_open_storage` is the one place a URL's scheme picks its backend.

The layout is the local store's (`sha256/ab/cdef…` under the remote's URL), so the same
output made by two pipelines, branches or people is stored once. Promises:

- Skipping is decided by listing, never by reading objects: a no-op push of a thousand
  objects is one or a few LIST requests.
- A partial upload is never visible under an object's name: object stores (S3, GCS,
  Azure) only show an object once its PUT (or multipart upload) completed; on other
  filesystems (local folders, mounts) the bytes go to `tmp/<sha>.<random>.part` first and
  are renamed into place.
- A partial download is never adopted: bytes land in the store's `tmp/` folder, are
  hashed, and only bytes that hash to their name are moved into the store.
- Local objects are hashed again before they are pushed, so damage on this machine never
  spreads to the team.
- Third-party exceptions are translated at this boundary into `RemoteError`s.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from civflow.errors import (
    CivflowError,
    FileAccessError,
    RemoteAccessDenied,
    RemoteError,
    RemoteUnreachable,
    UnsafePath,
)
from civflow.remote.config import RemoteConfig, redact
from civflow.remote.local import LocalFolder, folder_of
from civflow.store.objects import ObjectStore, hash_file

__all__ = ["Progress", "Remote", "Transfer"]

T = TypeVar("T")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Filesystems whose writes appear whole or not at all (a PUT, a completed multipart upload).
_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
# Folders on this machine: civflow's own backend, no fsspec.
_LOCAL = frozenset({"file", "local"})
# The optional extra (pyproject.toml) that brings each cloud scheme's storage library.
EXTRA_FOR_SCHEME = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs",
                    "az": "azure", "abfs": "azure", "abfss": "azure", "adl": "azure"}
# Up to this many distinct `ab/` prefixes are listed one by one; more, the whole tree once.
_FEW_PREFIXES = 16
# botocore's defaults (60 s reads, several attempts) under s3fs's own five retries made one
# listing of a silent endpoint last minutes, and a download that never came held a pull
# for six. Unless the config sets its own `config_kwargs`, every request (listing or
# transfer) waits at most the remote's `timeout` for each answer, botocore tries once
# and s3fs twice: a stalled object costs at most two timeouts, and the first one stops
# the whole transfer. Listings are bounded by `timeout` as a whole besides.
_S3_RETRIES = 2


def _s3_config(timeout: float) -> dict[str, Any]:
    return {"connect_timeout": min(10.0, timeout), "read_timeout": timeout,
            "retries": {"total_max_attempts": 1, "mode": "standard"}}
_CREDENTIAL_ERRORS = frozenset({"NoCredentialsError", "PartialCredentialsError",
                                "CredentialRetrievalError", "NoAuthTokenError",
                                "DefaultCredentialsError", "ClientAuthenticationError",
                                "RefreshError", "ProfileNotFound"})
_CREDENTIAL_HINT = ("civflow never reads credentials itself: set them where the storage "
                    "library looks (for S3: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                    "AWS_PROFILE, or an instance role)")
_FOLDER_HINT = ("check that this user may read and write the folder (its owner, group and "
                "mode); a file:// remote needs no credentials")
_MAX_REASON = 200
# Objects up to this size are read into memory once to be hashed and sent.
_IN_MEMORY = 16 * 1024 * 1024

class Progress(Protocol):
    """Told what a transfer will move, then each object's size once it has moved.

    `advance` is called from the transfer threads; implementations must be thread-safe
    (rich's Progress is).
    """

    def start(self, objects: int, size: int) -> None: ...

    def advance(self, size: int) -> None: ...


@dataclass
class Transfer:
    """What one push or pull did, object by object (sha256 hex names)."""

    done: list[str] = field(default_factory=list)       # transferred and verified
    skipped: list[str] = field(default_factory=list)    # the other side already had it
    missing: list[str] = field(default_factory=list)    # the source side does not have it
    corrupt: list[str] = field(default_factory=list)    # source bytes do not hash to the name
    repaired: list[str] = field(default_factory=list)   # remote copy of wrong size, replaced
    bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.corrupt


def _read_small(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FileAccessError(path=str(path), reason=exc.strerror or str(exc)) from exc


def _write(path: Path, data: bytes) -> None:
    try:
        with open(path, "xb") as out:
            out.write(data)
    except OSError as exc:
        raise FileAccessError(path=str(path), reason=exc.strerror or str(exc)) from exc


def _check(sha256: str) -> str:
    if not _SHA256.match(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return sha256


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.sub(r"://[^/\s@]*@", "://***@", text)  # never echo user:password in a URL
    return text if len(text) <= _MAX_REASON else text[:_MAX_REASON - 1] + "…"


def _open_storage(config: RemoteConfig) -> tuple[Any, str]:
    """The filesystem for the remote's URL and the base path of its keys: a folder on
    this machine through `LocalFolder`, anything else through fsspec (imported only
    here, on first use: `civflow validate` never pays for it, and a base install
    without it still reaches folders)."""
    if config.protocol in _LOCAL:
        try:
            root = folder_of(config.url)
        except ValueError as exc:
            raise RemoteUnreachable(str(exc), url=redact(config.url),
                                    hint="use file:///absolute/path, or a plain path") from None
        return LocalFolder(root), str(root).rstrip("/")
    core: Any = importlib.import_module("fsspec.core")
    # A fresh instance: fsspec's instance cache would outlive changed credentials.
    options = {"skip_instance_cache": True, **dict(config.options)}
    s3 = config.protocol in {"s3", "s3a"}
    if s3 and "config_kwargs" not in options:
        options["config_kwargs"] = _s3_config(config.timeout)
    fs, base = core.url_to_fs(config.url, **options)
    if s3 and isinstance(getattr(fs, "retries", None), int):
        fs.retries = min(fs.retries, _S3_RETRIES)
    return fs, str(base).rstrip("/")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


class Remote:
    """One remote (`RemoteConfig`): a local folder, or a store reached through fsspec;
    safe to use from one thread.

    The main entry points, for the CLI and for the planner and executor:

    - `has_many(shas) -> set[str]`: which objects the remote holds (listing only).
    - `pull_into(store, shas)`: download what the store lacks, verify, adopt.
    - `push_from(store, shas)`: upload what the remote lacks, after re-hashing it locally.
    """

    def __init__(self, config: RemoteConfig) -> None:
        self.config = config
        self.url = redact(config.url)
        self.jobs = config.jobs
        self.atomic_writes = config.protocol in _OBJECT_STORES
        self.timeout = config.timeout
        with self._translated("opening it"):
            fs, base = _open_storage(config)
        self.fs: Any = fs
        self.base = base
        # Set when a listing outlived `timeout`: its thread may still be inside `fs`, so
        # this remote is not used again (every later call raises this at once).
        self._gone: RemoteError | None = None

    def __repr__(self) -> str:
        return f"Remote({self.url!r})"

    def key_for(self, sha256: str) -> str:
        """The object's path on the remote: `<base>/sha256/ab/cdef…`."""
        sha256 = _check(sha256)
        return f"{self.base}/sha256/{sha256[:2]}/{sha256[2:]}"

    # -- listing ---------------------------------------------------------------------

    def stat_many(self, shas: Iterable[str]) -> dict[str, int]:
        """Size on the remote of each of `shas` it holds (by listing; nothing is read)."""
        wanted = {_check(s) for s in shas}
        if not wanted:
            return {}
        root = f"{self.base}/sha256"
        prefixes = sorted({s[:2] for s in wanted})

        def listing() -> dict[str, int]:
            found: dict[str, int] = {}
            with self._translated("listing it"):
                self.fs.invalidate_cache(self.base)
                if len(prefixes) <= _FEW_PREFIXES:
                    for prefix in prefixes:
                        found.update(self._list(f"{root}/{prefix}"))
                else:
                    found = self._list(root)
            return found
        found = self._bounded("listing it", listing)
        return {sha: found[sha] for sha in wanted if sha in found}

    def has_many(self, shas: Iterable[str]) -> set[str]:
        """The subset of `shas` the remote holds; one or a few LIST calls, no reads.

        For the planner: an instance whose artifacts are missing locally but all in
        `has_many` is "cached (remote)" rather than changed.
        """
        return set(self.stat_many(shas))

    def list_objects(self, prefix: str | None = None) -> dict[str, int]:
        """Every object the remote holds (or those under `sha256/<prefix>/`, a two-hex
        prefix) with its size; listing only."""
        if prefix is not None and not re.fullmatch(r"[0-9a-f]{2}", prefix):
            raise ValueError(f"not a two-hex prefix: {prefix!r}")
        folder = f"{self.base}/sha256" + (f"/{prefix}" if prefix is not None else "")

        def listing() -> dict[str, int]:
            with self._translated("listing it"):
                return self._list(folder)
        return self._bounded("listing it", listing)

    def _bounded(self, action: str, work: Callable[[], T]) -> T:
        """`work()`, given up after `timeout` seconds: a server that accepts connections
        and never answers must not hold a plan or a run. The work goes on in a daemon
        thread that cannot be stopped, so this remote is not used again after that."""
        if self._gone is not None:
            raise self._gone
        box: dict[str, Any] = {}
        done = threading.Event()

        def attempt() -> None:
            try:
                box["value"] = work()
            except BaseException as exc:  # handed to the caller's thread as it is
                box["error"] = exc
            finally:
                done.set()
        threading.Thread(target=attempt, name="civflow-remote", daemon=True).start()
        if not done.wait(self.timeout):
            self._gone = RemoteUnreachable(
                f"no answer within {self.timeout:g} s while {action}", url=self.url,
                hint="check the URL, the endpoint_url option and the network; [remote] "
                     "timeout sets how long a listing may take")
            raise self._gone
        if "error" in box:
            raise box["error"]
        value: T = box["value"]
        return value

    def _list(self, folder: str) -> dict[str, int]:
        try:
            entries = self.fs.find(folder, detail=True)
        except FileNotFoundError:
            return {}
        result: dict[str, int] = {}
        for name, info in entries.items():
            parts = str(name).rstrip("/").rsplit("/", 2)
            if len(parts) != 3 or len(parts[1]) != 2 or info.get("type") != "file":
                continue  # temp parts and anything else that is not an object
            sha = parts[1] + parts[2]
            if _SHA256.match(sha):
                result[sha] = int(info.get("size") or 0)
        return result

    def exists(self) -> bool:
        """Whether the bucket (object stores) or the folder (elsewhere) exists."""
        def check() -> bool:
            with self._translated("checking it"):
                if self.atomic_writes:
                    return bool(self.fs.exists(self.base.split("/", 1)[0]))
                return bool(self.fs.isdir(self.base))
        return self._bounded("checking it", check)

    # -- transfers -------------------------------------------------------------------

    def push_from(self, store: ObjectStore, shas: Iterable[str], *,
                  progress: Progress | None = None) -> Transfer:
        """Upload each of `shas` the remote lacks from `store`; skip what it holds.

        Skips are decided by listing. A remote object whose size differs from the local
        one is damaged: it is replaced (and listed in `repaired`). Local objects are
        hashed before upload; a corrupt one is not pushed (`corrupt`), one absent from
        the store is `missing`. Unreachable remote, missing credentials or permission
        denied raise a `RemoteError` and stop every transfer in flight.
        """
        wanted = sorted({_check(s) for s in shas})
        result = Transfer()
        local: dict[str, int] = {}
        for sha in wanted:
            try:
                local[sha] = store.path_for(sha).stat().st_size
            except OSError:
                result.missing.append(sha)
        remote = self.stat_many(local)
        if local and not remote and not self.exists():
            if self.atomic_writes:
                raise RemoteUnreachable("no such bucket", url=self.url,
                                        hint="create the bucket, or fix the remote URL")
            with self._translated("creating its folder"):
                self.fs.makedirs(self.base, exist_ok=True)
        todo: list[str] = []
        for sha, size in local.items():
            if sha not in remote:
                todo.append(sha)
            elif remote[sha] != size:
                todo.append(sha)
                result.repaired.append(sha)
            else:
                result.skipped.append(sha)
        if not todo:
            return result
        if not self.atomic_writes:
            with self._translated("creating its folders"):
                self.fs.makedirs(f"{self.base}/tmp", exist_ok=True)
                for prefix in sorted({sha[:2] for sha in todo}):
                    self.fs.makedirs(f"{self.base}/sha256/{prefix}", exist_ok=True)
        if progress is not None:
            progress.start(len(todo), sum(local[sha] for sha in todo))
        lock = threading.Lock()

        def push_one(sha: str) -> None:
            path = store.path_for(sha)
            # Small objects are read once, hashed and sent from memory; big ones are
            # hashed first and streamed from disk.
            data = _read_small(path) if local[sha] <= _IN_MEMORY else None
            actual = hashlib.sha256(data).hexdigest() if data is not None else hash_file(path)
            if actual != sha:
                with lock:
                    result.corrupt.append(sha)
                    if sha in result.repaired:
                        result.repaired.remove(sha)
                return
            with self._translated("uploading to it"):
                if self.atomic_writes:
                    self._send(path, data, self.key_for(sha))
                else:
                    tmp = f"{self.base}/tmp/{sha}.{secrets.token_hex(8)}.part"
                    try:
                        self._send(path, data, tmp)
                        self.fs.mv(tmp, self.key_for(sha))
                    except BaseException:
                        with contextlib.suppress(Exception):
                            self.fs.rm_file(tmp)
                        raise
            with lock:
                result.done.append(sha)
                result.bytes += local[sha]
            if progress is not None:
                progress.advance(local[sha])

        self._each(todo, push_one)
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache(self.base)
        return result

    def _send(self, path: Path, data: bytes | None, key: str) -> None:
        if data is not None:
            self.fs.pipe_file(key, data)
        else:
            self.fs.put_file(str(path), key)

    def pull_into(self, store: ObjectStore, shas: Iterable[str], *,
                  progress: Progress | None = None) -> Transfer:
        """Download each of `shas` the store lacks; adopt only bytes that hash to their name.

        For the executor: call it with the artifacts of "cached (remote)" instances
        before restoring out/ (`civflow.store.integrity.restore_artifact`), instead of
        submitting them. Objects the remote lacks are `missing`; remote objects whose
        bytes do not match are `corrupt`: reported, not adopted, left on the remote.
        """
        wanted = sorted({_check(s) for s in shas})
        result = Transfer()
        need = []
        for sha in wanted:
            if store.has(sha):
                result.skipped.append(sha)
            else:
                need.append(sha)
        if not need:
            return result
        sizes = self.stat_many(need)
        if not sizes and not self.exists():
            raise RemoteUnreachable("no such bucket or folder", url=self.url,
                                    hint="check the remote URL (civflow.toml, $CIVFLOW_REMOTE)")
        result.missing.extend(sha for sha in need if sha not in sizes)
        todo = [sha for sha in need if sha in sizes]
        tmp_dir = store.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        if progress is not None:
            progress.start(len(todo), sum(sizes[sha] for sha in todo))
        lock = threading.Lock()

        def pull_one(sha: str) -> None:
            tmp = tmp_dir / f"pull-{sha[:16]}-{secrets.token_hex(6)}.part"
            try:
                try:
                    with self._translated("downloading from it"):
                        # Small objects come in one read, are hashed in memory and only
                        # written when they match; big ones stream to disk first.
                        data = (self.fs.cat_file(self.key_for(sha))
                                if sizes[sha] <= _IN_MEMORY else None)
                        if data is None:
                            self.fs.get_file(self.key_for(sha), str(tmp))
                except RemoteUnreachable as exc:
                    if not isinstance(exc.__cause__, FileNotFoundError):
                        raise
                    with lock:  # it vanished since the listing
                        result.missing.append(sha)
                    return
                actual = hashlib.sha256(data).hexdigest() if data is not None else \
                    hash_file(tmp)
                if actual != sha:
                    with lock:
                        result.corrupt.append(sha)
                    return
                if data is not None:
                    _write(tmp, data)
                size = tmp.stat().st_size
                store.adopt(tmp, sha)
            finally:
                with contextlib.suppress(OSError):
                    tmp.unlink()
            with lock:
                result.done.append(sha)
                result.bytes += size
            if progress is not None:
                progress.advance(size)

        self._each(todo, pull_one)
        return result

    def _each(self, items: list[str], work: Callable[[str], None]) -> None:
        """`work(item)` for each item with `jobs` in flight; the first error (a
        RemoteError: unreachable, denied) cancels what has not started and is raised."""
        if not items:
            return
        with ThreadPoolExecutor(max_workers=min(self.jobs, len(items)),
                                thread_name_prefix="civflow-remote") as pool:
            futures: list[Future[None]] = [pool.submit(work, item) for item in items]
            wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in futures if f.done() and not f.cancelled()
                           and f.exception() is not None), None)
            if failed is not None:
                for future in futures:
                    future.cancel()
                wait(futures)
                error = failed.exception()
                assert error is not None
                raise error

    # -- errors ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """Turn the storage library's exceptions into RemoteErrors that say what to do."""
        try:
            yield
        except UnsafePath as exc:  # a key, or a symlink in a shared folder, leads outside
            raise RemoteError(f"refused while {action}: {exc.message}", url=self.url,
                              hint="a symlink or '..' in the remote folder points outside "
                                   "it; civflow never reads or writes there (remove the "
                                   "link)") from exc
        except CivflowError:
            raise
        except ImportError as exc:
            protocol = self.config.protocol
            extra = EXTRA_FOR_SCHEME.get(protocol)
            if extra is not None:
                hint = f"pip install 'civflow[{extra}]'"
            elif exc.name == "fsspec":
                hint = (f"pip install fsspec and its filesystem package for {protocol}://, "
                        "or use a file:// folder, which needs no extra")
            else:
                hint = f"install the fsspec filesystem package for {protocol}://"
            raise RemoteUnreachable(f"no storage library for {protocol}://: "
                                    f"{_short(exc)}", url=self.url, hint=hint) from exc
        except Exception as exc:
            raise self._classify(exc, action) from exc

    def _classify(self, exc: Exception, action: str) -> RemoteError:
        chain = list(_chain(exc))
        names = {type(e).__name__ for e in chain}
        if names & _CREDENTIAL_ERRORS:
            return RemoteAccessDenied(f"no usable credentials found while {action}",
                                      url=self.url, hint=_CREDENTIAL_HINT)
        if any(isinstance(e, PermissionError) for e in chain):
            local = self.config.protocol in _LOCAL
            return RemoteAccessDenied(f"permission denied while {action}: {_short(exc)}",
                                      url=self.url,
                                      hint=_FOLDER_HINT if local else _CREDENTIAL_HINT)
        if any(isinstance(e, TimeoutError) or "ReadTimeout" in type(e).__name__
               for e in chain):
            return RemoteUnreachable(
                f"no answer within {self.timeout:g} s while {action}", url=self.url,
                hint="check the endpoint and the network; [remote] timeout sets how long "
                     "civflow waits for each answer")
        if any(isinstance(e, ConnectionError) or "Connect" in type(e).__name__
               or "Timeout" in type(e).__name__ for e in chain):
            return RemoteUnreachable(f"cannot connect while {action}: {_short(exc)}",
                                     url=self.url, hint="check the URL, the endpoint_url "
                                     "option and the network")
        if isinstance(exc, FileNotFoundError):
            return RemoteUnreachable(f"not found while {action}: {_short(exc)}", url=self.url,
                                     hint="check the bucket or folder of the remote URL")
        if isinstance(exc, ValueError) and "protocol" in str(exc).lower():
            return RemoteUnreachable(f"unknown kind of storage: {_short(exc)}", url=self.url,
                                     hint="use an fsspec URL: file:///path, s3://bucket/prefix")
        return RemoteError(f"{action} failed: {_short(exc)}", url=self.url)

