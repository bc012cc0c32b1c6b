"""Shared artifacts on object storage: a content-addressed remote reached through fsspec.

For the command line (`civflow push` / `civflow pull`) and for the planner and
executor (see `remote_for`, `Remote.has_many`, `Remote.pull_into`, `Remote.push_from`).
The S3 support needs the optional extra: `pip install 'civflow[s3]'`.
"""

from civflow.remote.config import ENV, RemoteConfig, load_config, redact
from civflow.remote.storage import Progress, Remote, Transfer
from civflow.remote.sync import (
    Project,
    Restored,
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
    "Progress",
    "Project",
    "Remote",
    "RemoteConfig",
    "Restored",
    "Transfer",
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
