"""What the lockfile and the object store say about earlier results, as planning inputs."""

from __future__ import annotations

from pathlib import Path

from civflow.plan import Prior, tokenize_output
from civflow.spec.model import PipelineSpec
from civflow.store.lockfile import LockedInstance, Lockfile
from civflow.store.objects import ObjectStore


def project_root(spec: PipelineSpec) -> Path:
    return project_root_for(spec.path)


def project_root_for(pipeline_file: Path) -> Path:
    """Where `.civflow/` and `out/` live: the nearest ancestor of the pipeline file that
    has a `.civflow` folder or is a git checkout, else the pipeline's own folder."""
    here = pipeline_file.resolve().parent
    for folder in (here, *here.parents):
        if (folder / ".civflow").is_dir() or (folder / ".git").exists():
            return folder
    return here


def object_store(spec: PipelineSpec) -> ObjectStore:
    return ObjectStore(project_root(spec) / ".civflow" / "objects")


def prior_of(entry: LockedInstance, lock_dir: Path, store: ObjectStore | None) -> Prior:
    """Planning view of one lock entry; artifacts count only if present with their hash."""
    sha_by_blob = {a.blob_id: a.sha256 for a in entry.artifacts}
    ok = True
    if store is not None:
        for artifact in entry.artifacts:
            if not store.has(artifact.sha256) or not (lock_dir / artifact.path).exists():
                ok = False
                break
    return Prior(
        fingerprint=entry.fingerprint,
        request=entry.request,
        output=tokenize_output(entry.output, sha_by_blob),
        seed=entry.seed,
        artifacts_ok=ok,
        cost=entry.cost,
    )


def load_priors(spec: PipelineSpec, *, check_artifacts: bool = True) -> dict[str, Prior]:
    lock = Lockfile.load(spec.lockfile_path)
    if lock is None:
        return {}
    store = object_store(spec) if check_artifacts else None
    folder = spec.lockfile_path.parent
    return {name: prior_of(entry, folder, store) for name, entry in lock.instances.items()}

