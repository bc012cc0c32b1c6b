"""Everything civflow keeps on disk: atomic writes, content-addressed objects, lockfile, journal."""

from civflow.store.atomic import atomic_write_bytes, atomic_write_text
from civflow.store.integrity import (
    ArtifactState,
    ArtifactStatus,
    StatCache,
    check_artifact,
    check_artifacts,
    restore_artifact,
)
from civflow.store.journal import (
    InstanceRun,
    Journal,
    RunState,
    external_id,
    find_unfinished_run,
)
from civflow.store.lockfile import Artifact, LockedInstance, Lockfile
from civflow.store.objects import ObjectStore, hash_file

__all__ = [
    "Artifact",
    "ArtifactState",
    "ArtifactStatus",
    "InstanceRun",
    "Journal",
    "LockedInstance",
    "Lockfile",
    "ObjectStore",
    "RunState",
    "StatCache",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_artifact",
    "check_artifacts",
    "external_id",
    "find_unfinished_run",
    "hash_file",
    "restore_artifact",
]
