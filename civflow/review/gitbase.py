"""Files as of a git ref, read through git (no checkout), and copied into a scratch folder.

`civflow plan --base REF` compares the working tree with the pipelines, vars files,
includes and lockfiles of REF. Everything here goes through `git rev-parse`,
`git ls-tree`, `git cat-file` and `git diff --name-status -M`; nothing is checked out
and the working tree is never touched. Paths are untrusted (they come from the command
line and from the repository's own tree): a path that leaves the repository is refused,
a tree entry that is a symlink or a submodule is never copied, and every copy lands
inside the scratch folder it was meant for. Reads are bounded in size and count.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from civflow.errors import UnsafePath, UsageError
from civflow.names import shown

__all__ = [
    "MAX_BASE_BYTES",
    "MAX_BASE_FILES",
    "MAX_FILE_BYTES",
    "BaseTree",
    "TreeEntry",
    "open_base",
    "repo_root",
]

# One file of the base is at most this big (a pipeline, a lockfile, an include).
MAX_FILE_BYTES = 64 * 2**20
# And all the files copied for one review together.
MAX_BASE_BYTES = 512 * 2**20
MAX_BASE_FILES = 20_000
# git is local; a command that takes longer than this is stuck, not slow.
_GIT_TIMEOUT = 120.0


def _git(root: Path, *args: str, input_bytes: bytes | None = None,
         check: bool = True) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0",
           "LC_ALL": "C"}
    try:
        done = subprocess.run(["git", "-C", str(root), *args], input=input_bytes,
                              capture_output=True, timeout=_GIT_TIMEOUT, env=env, check=False)
    except FileNotFoundError:
        raise UsageError("--base needs git, and no `git` command was found",
                         hint="install git, or run plan without --base") from None
    except subprocess.TimeoutExpired:
        raise UsageError(f"git {args[0]} did not finish within {_GIT_TIMEOUT:.0f} s",
                         hint="is the repository on a slow or locked filesystem?") from None
    if check and done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise UsageError(f"git {args[0]} failed: {reason[-1] if reason else done.returncode}")
    return done


def repo_root(cwd: Path) -> Path:
    """The top of the git working tree that holds `cwd`."""
    done = _git(cwd, "rev-parse", "--show-toplevel", check=False)
    if done.returncode != 0:
        raise UsageError(f"{cwd} is not inside a git repository",
                         hint="--base compares with a git ref; run plan without --base "
                              "outside a repository")
    return Path(done.stdout.decode("utf-8", "surrogateescape").strip()).resolve()


@dataclass(frozen=True)
class TreeEntry:
    """One regular file of the base tree: its repository path, blob id and size."""

    path: str  # posix, relative to the repository's top
    blob: str
    size: int


def _safe_relative(path: str) -> bool:
    """A repository path that stays inside the repository whatever folder it is joined to."""
    parts = PurePosixPath(path).parts
    return bool(parts) and not path.startswith("/") and "\\" not in path and \
        all(p not in ("", ".", "..") and "\x00" not in p for p in parts)


class BaseTree:
    """The tree of one commit, read through git; see the module docstring."""

    def __init__(self, root: Path, ref: str, commit: str) -> None:
        self.root = root
        self.ref = ref
        self.commit = commit
        self._listed: dict[str, TreeEntry] | None = None
        self.copied_bytes = 0
        self.copied_files = 0

    # -- paths ------------------------------------------------------------------------

    def relative(self, path: Path, *, cwd: Path) -> str:
        """`path` (as given on the command line) as a repository path; refused when it
        leaves the repository."""
        full = (cwd / path) if not path.is_absolute() else path
        # Symlinks are followed: a link in the tree that points out is refused too.
        try:
            real = full.resolve()
        except OSError:
            real = Path(os.path.abspath(full))
        try:
            text = real.relative_to(self.root).as_posix()
        except ValueError:
            pass
        else:
            return "" if text == "." else text
        raise UsageError(f"{path}: outside the git repository at {self.root}",
                         hint="--base compares files of one repository; name paths inside it")

    # -- the tree ---------------------------------------------------------------------

    def files(self) -> Mapping[str, TreeEntry]:
        """Every regular file of the commit (symlinks and submodules left out), listed once."""
        if self._listed is None:
            out = _git(self.root, "ls-tree", "-r", "-l", "-z", "--full-tree", self.commit)
            listed: dict[str, TreeEntry] = {}
            for record in out.stdout.split(b"\x00"):
                if not record:
                    continue
                meta, _, raw_path = record.partition(b"\t")
                fields = meta.split()
                if len(fields) != 4 or fields[1] != b"blob" or fields[0] not in (
                        b"100644", b"100755"):
                    continue  # a symlink, a submodule: never copied
                path = raw_path.decode("utf-8", "surrogateescape")
                if not _safe_relative(path):
                    continue
                try:
                    size = int(fields[3])
                except ValueError:
                    continue
                listed[path] = TreeEntry(path, fields[2].decode("ascii"), size)
            self._listed = listed
        return self._listed

    def has(self, path: str) -> bool:
        return path in self.files()

    def under(self, folder: str) -> list[str]:
        """Files at or below `folder` ('' for the whole tree), sorted."""
        prefix = f"{folder.rstrip('/')}/" if folder else ""
        return sorted(p for p in self.files() if p.startswith(prefix))

    def read(self, path: str, *, limit: int = MAX_FILE_BYTES) -> bytes | None:
        """The bytes of `path` as of the commit, or None when it has no such regular file."""
        return self.read_many([path], limit=limit).get(path)

    def read_many(self, paths: Iterable[str], *, limit: int = MAX_FILE_BYTES
                  ) -> dict[str, bytes]:
        """The bytes of each of `paths` that the commit has (one `git cat-file --batch`);
        a file over `limit` bytes is a UsageError."""
        entries = [self.files()[p] for p in dict.fromkeys(paths) if p in self.files()]
        for entry in entries:
            if entry.size > limit:
                raise UsageError(
                    f"{entry.path} at {self.ref} is {entry.size:,} bytes, more than the "
                    f"{limit:,} a base file may have", hint="is it really a pipeline file?")
        if not entries:
            return {}
        request = "".join(f"{e.blob}\n" for e in entries).encode("ascii")
        out = _git(self.root, "cat-file", "--batch", input_bytes=request).stdout
        found: dict[str, bytes] = {}
        at = 0
        for entry in entries:
            end = out.index(b"\n", at)
            header = out[at:end].split()
            if len(header) != 3 or header[1] != b"blob":
                raise UsageError(f"git cat-file could not read {entry.path} at {self.ref}")
            size = int(header[2])
            found[entry.path] = out[end + 1:end + 1 + size]
            at = end + 1 + size + 1
        return found

    def renames(self) -> dict[str, str]:
        """head path -> base path for files git sees as renamed between the commit and the
        working tree (`git diff --name-status -M`)."""
        out = _git(self.root, "diff", "-z", "--name-status", "-M", self.commit, "--").stdout
        fields = out.split(b"\x00")
        moved: dict[str, str] = {}
        i = 0
        while i < len(fields) and fields[i]:
            status = fields[i].decode("ascii", "replace")
            if status[:1] in ("R", "C") and i + 2 < len(fields):
                old = fields[i + 1].decode("utf-8", "surrogateescape")
                new = fields[i + 2].decode("utf-8", "surrogateescape")
                if status[:1] == "R" and _safe_relative(old) and _safe_relative(new):
                    moved[new] = old
                i += 3
            else:
                i += 2
        return moved

    # -- copies -----------------------------------------------------------------------

    def copy(self, paths: Sequence[str], into: Path) -> list[str]:
        """Write each of `paths` that the commit has below `into`, at the same relative
        place; returns those written. Bounded by MAX_BASE_FILES / MAX_BASE_BYTES."""
        wanted = [p for p in dict.fromkeys(paths) if p in self.files()]
        todo = [p for p in wanted if not (into / p).exists()]
        budget = sum(self.files()[p].size for p in todo)
        if self.copied_files + len(todo) > MAX_BASE_FILES or \
                self.copied_bytes + budget > MAX_BASE_BYTES:
            raise UsageError(
                f"the base files to compare are too many or too big ({len(todo)} files, "
                f"{budget:,} bytes more than the {MAX_BASE_FILES:,} files / "
                f"{MAX_BASE_BYTES:,} bytes allowed)",
                hint="name fewer pipelines, or keep large files out of pipeline folders")
        base = into.resolve()
        for path, data in self.read_many(todo).items():
            target = (base / path).resolve()
            if os.path.commonpath([base, target]) != str(base):
                raise UnsafePath(path=path, base=str(base))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            self.copied_files += 1
            self.copied_bytes += len(data)
        return wanted


def open_base(ref: str, cwd: Path) -> BaseTree:
    """The commit `ref` names in the repository holding `cwd`.

    A ref git does not know is a UsageError; in a shallow clone (CI checkouts are by
    default) its hint says how to fetch the base.
    """
    root = repo_root(cwd)
    if not ref or ref.startswith("-") or any(c in ref for c in "\x00\n\r"):
        raise UsageError(f"--base {shown(repr(ref))}: not a git ref",
                         hint="name a branch, a tag or a commit, e.g. --base main")
    done = _git(root, "rev-parse", "--verify", "--quiet", "--end-of-options",
                f"{ref}^{{commit}}", check=False)
    commit = done.stdout.decode("ascii", "replace").strip()
    if done.returncode != 0 or not commit:
        # The ref is the caller's text: quoted for the shell in the commands the hint
        # suggests, and shown with its invisible characters escaped.
        quoted = shown(shlex.quote(ref))
        branch = shown(shlex.quote(f"origin/{ref.removeprefix('origin/')}"))
        shallow = _git(root, "rev-parse", "--is-shallow-repository", check=False)
        if shallow.stdout.strip() == b"true":
            hint = (f"this is a shallow clone: fetch the base first, e.g. "
                    f"`git fetch --depth=50 origin {quoted}` (or, in GitHub Actions, "
                    f"actions/checkout with `fetch-depth: 0`), then name it as "
                    f"--base {branch}")
        else:
            hint = (f"fetch it first (`git fetch origin {quoted}`), or name a branch, tag "
                    f"or commit this clone has (`git branch -a`)")
        raise UsageError(f"--base {quoted}: no such commit in {root}", hint=hint)
    return BaseTree(root, ref, commit)
