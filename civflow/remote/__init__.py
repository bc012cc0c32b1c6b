"""Shared artifacts in a folder or on object storage: a content-addressed remote.

For the command line (`civflow push` / `civflow pull`, and `civflow checkout` in
`civflow.remote.checkout`, which restores out/ with the same `restore_out`) and for the
planner and executor (see `remote_for`, `Remote.has_many`, `Remote.pull_into`,
`Remote.push_from`).
A `file://` folder needs nothing beyond the base install; cloud stores go through
fsspec and need their extra: `civflow[s3]`, `civflow[gcs]` or `civflow[azure]`.

For code that needs a lockfile's artifacts without running anything (`report --base`):

    from civflow.remote import fetch_objects
    found = fetch_objects(project_root, shas)   # {sha256: Path in the local store}
                                                # (or a pipeline file instead of the root)
    found.missing, found.corrupt                # the shas it could not make available

`fetch_objects` pulls what the local store (`<root>/.civflow/objects`) lacks from the
project's remote when one is configured, hashing every object before it is adopted;
it raises a `RemoteError` when the configured remote cannot be used.
"""

from civflow.remote.config import ENV, RemoteConfig, load_config, redact
from civflow.remote.storage import Progress, Remote, Transfer
from civflow.remote.sync import (
    Fetched,
    Project,
    Restored,
    fetch_objects,
    projects_of,
    pull_pipelines,
    push_pipelines,
    remote_for,
    restore_out,
    shas_of,
    store_for,
)

__all__ = [
    "ENV",
    "Fetched",
    "Progress",
    "Project",
    "Remote",
    "RemoteConfig",
    "Restored",
    "Transfer",
    "fetch_objects",
    "load_config",
    "projects_of",
    "pull_pipelines",
    "push_pipelines",
    "redact",
    "remote_for",
    "restore_out",
    "shas_of",
    "store_for",
]
