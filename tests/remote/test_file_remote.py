"""The team remote out of the box: a `file://` folder works with the base install alone,
keeps every path under its root, and a cloud URL without its library names the extra.

"Base install" is simulated the way tests/test_extras.py does it: civflow's command line
runs in a subprocess where the storage libraries are made unimportable (a None in
sys.modules makes `import fsspec` raise ImportError), so these tests run in the dev
install all the same.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from civflow.errors import RemoteError, UnsafePath
from civflow.remote import Remote, RemoteConfig
from civflow.remote.local import LocalFolder
from civflow.store.objects import ObjectStore
from tests.remote.support import clone, make_project, write_config

REPO = Path(__file__).resolve().parents[2]
# The storage libraries no base install has.
CLOUD_LIBRARIES = ("fsspec", "s3fs", "gcsfs", "adlfs")

WITHOUT = """\
import sys
blocked = sys.argv[1].split(",")
for name in blocked:
    sys.modules[name] = None
for name in blocked:  # the block holds: each import fails as in an install without it
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{name} is importable")
from civflow.cli import main
try:
    main(sys.argv[2:])
finally:
    loaded = [name for name in blocked if sys.modules.get(name) is not None]
    assert not loaded, loaded
"""


def _civflow_without(modules: tuple[str, ...], *args: str,
                     cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO),
           "HOME": str(cwd), "AWS_EC2_METADATA_DISABLED": "true"}
    return subprocess.run([sys.executable, "-c", WITHOUT, ",".join(modules), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("form", ["file-uri", "plain-path", "uri-with-a-space"])
def test_push_then_pull_through_a_folder_needs_no_storage_library(
        tmp_path: Path, form: str) -> None:
    """Promise: `pip install civflow` alone shares artifacts through a folder: push from
    one clone, pull into a fresh one, every out/ file arrives byte for byte."""
    share = tmp_path / ("team share" if form == "uri-with-a-space" else "share")
    url = str(share) if form == "plain-path" else share.as_uri()
    a, b = tmp_path / "a", tmp_path / "b"
    artifacts = make_project(a, count=4, size=50_000, url=url)
    (a / ".git").mkdir()

    pushed = _civflow_without(CLOUD_LIBRARIES, "push", cwd=a)
    assert pushed.returncode == 0, pushed.stderr
    assert "pushed 4 object(s)" in pushed.stdout, pushed.stdout
    objects = sorted(p.relative_to(share) for p in share.rglob("*") if p.is_file())
    assert objects == sorted(Path("sha256", x.sha256[:2], x.sha256[2:]) for x in artifacts)
    assert not [p for p in share.rglob("*") if p.name.endswith((".tmp", ".part"))]

    clone(a, b)
    pulled = _civflow_without(CLOUD_LIBRARIES, "pull", cwd=b)
    assert pulled.returncode == 0, pulled.stderr
    assert "pulled 4 object(s)" in pulled.stdout and "p: 4 restored" in pulled.stdout
    assert _files(b / "out") == _files(a / "out") and len(_files(b / "out")) == 4
    assert "Traceback" not in pushed.stderr + pulled.stderr


def test_hostile_keys_are_refused_and_nothing_lands_outside_the_root(tmp_path: Path) -> None:
    """Promise: keys come from other people's lockfiles; `..`, absolute keys elsewhere
    and NUL never form a path outside the remote's folder, for any write or read."""
    root = tmp_path / "share"
    root.mkdir()
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload")
    before = sorted(tmp_path.rglob("*"))
    folder = LocalFolder(root)
    hostile = ["../x", "sha256/../../x", f"{root}/../x", f"{root}/sha256/../../x",
               str(tmp_path / "x"), f"{root}x/y", "/etc/civflow-x", "a/\0/b"]
    for key in hostile:
        for write in (lambda k: folder.pipe_file(k, b"bad"),
                      lambda k: folder.put_file(str(source), k),
                      lambda k: folder.makedirs(k, exist_ok=True),
                      lambda k: folder.mv(f"{root}/sha256", k)):
            with pytest.raises(UnsafePath, match="resolves outside"):
                write(key)
        with pytest.raises(UnsafePath, match="refusing to read it"):
            folder.cat_file(key)
        with pytest.raises(UnsafePath):
            folder.get_file(key, str(tmp_path / "got"))
    assert sorted(tmp_path.rglob("*")) == before
    # What the remote forms itself is never hostile: names are sha256 hex, checked.
    remote = Remote(RemoteConfig(url=root.as_uri()))
    with pytest.raises(ValueError):
        remote.key_for("../x")


def test_a_symlink_planted_in_the_shared_folder_is_never_followed(tmp_path: Path) -> None:
    """Promise: a folder link that leads out of the remote makes push and pull a clear
    RemoteError naming the path (nothing written there), and a file link is never an
    object (its target is not read)."""
    share, outside = tmp_path / "share", tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret"
    secret.write_bytes(b"not yours")
    store = ObjectStore(tmp_path / "store")
    src = tmp_path / "f"
    src.write_bytes(b"an artifact")
    sha = store.import_file(src)
    (share / "sha256").mkdir(parents=True)
    (share / "sha256" / sha[:2]).symlink_to(outside, target_is_directory=True)
    remote = Remote(RemoteConfig(url=share.as_uri()))
    with pytest.raises(RemoteError) as caught:
        remote.push_from(store, [sha])
    text = str(caught.value)
    assert "refused while listing it" in text and f"resolves outside {share}" in text
    assert sorted(outside.iterdir()) == [secret]

    # A file link named like an object: not listed, so not pulled, and not overwritten.
    (share / "sha256" / sha[:2]).unlink()
    (share / "sha256" / sha[:2]).mkdir()
    (share / "sha256" / sha[:2] / sha[2:]).symlink_to(secret)
    assert remote.has_many([sha]) == set()
    fresh = ObjectStore(tmp_path / "fresh")
    assert remote.pull_into(fresh, [sha]).missing == [sha] and not fresh.has(sha)
    assert remote.push_from(store, [sha]).done == [sha]
    assert secret.read_bytes() == b"not yours"
    assert not (share / "sha256" / sha[:2] / sha[2:]).is_symlink()


def test_a_planted_symlink_is_one_rendered_error_on_the_command_line(tmp_path: Path) -> None:
    share, outside = tmp_path / "share", tmp_path / "outside"
    outside.mkdir()
    a = tmp_path / "a"
    make_project(a, count=1, url=share.as_uri())
    (a / ".git").mkdir()
    share.mkdir()
    (share / "sha256").symlink_to(outside, target_is_directory=True)
    done = _civflow_without(CLOUD_LIBRARIES, "push", cwd=a)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"error: remote {share.as_uri()}: refused while"), done.stderr
    assert "hint:" in done.stderr and "Traceback" not in done.stderr
    assert not list(outside.iterdir())


@pytest.mark.parametrize(("url", "extra", "blocked"), [
    ("s3://team-bucket/civflow", "s3", CLOUD_LIBRARIES),   # a base install
    ("s3://team-bucket/civflow", "s3", ("s3fs",)),         # fsspec from elsewhere
    ("gs://team-bucket/civflow", "gcs", CLOUD_LIBRARIES),
    ("az://team-container/civflow", "azure", ("adlfs",)),
])
def test_a_cloud_url_without_its_library_names_the_extra(
        tmp_path: Path, url: str, extra: str, blocked: tuple[str, ...]) -> None:
    """Promise: a cloud remote without its storage library is one rendered error whose
    hint is the pip command for that scheme's extra, never a traceback."""
    a = tmp_path / "a"
    make_project(a, count=1)
    write_config(a, url)
    (a / ".git").mkdir()
    done = _civflow_without(blocked, "push", cwd=a)
    assert done.returncode == 1, done.stderr
    scheme = url.split("://")[0]
    assert done.stderr.startswith(f"error: remote {url}: no storage library for "
                                  f"{scheme}://"), done.stderr
    assert f"hint: pip install 'civflow[{extra}]'" in done.stderr
    assert "Traceback" not in done.stderr
