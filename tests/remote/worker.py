"""A transfer in its own process, for the kill -9 tests: `python -m tests.remote.worker
push|pull STORE URL ENDPOINT SHAS_FILE` (ENDPOINT is '-' for file:// remotes)."""

from __future__ import annotations

import sys
from pathlib import Path

from civflow.remote import Remote, RemoteConfig
from civflow.store.objects import ObjectStore


def main(argv: list[str]) -> int:
    mode, store_dir, url, endpoint, shas_file = argv
    options = {} if endpoint == "-" else {"endpoint_url": endpoint}
    remote = Remote(RemoteConfig(url=url, options=options, jobs=4))
    store = ObjectStore(Path(store_dir))
    shas = Path(shas_file).read_text(encoding="utf-8").split()
    done = remote.push_from(store, shas) if mode == "push" else remote.pull_into(store, shas)
    return 0 if done.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
