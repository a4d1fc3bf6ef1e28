"""Every private Ray API weaklab calls, in one place.

Ray is pinned (``ray[tune]==2.60.0`` in ``pyproject.toml``) because these calls are not
public and move between releases. Each one is here, named for what weaklab needs of it,
and ``tests/test_ray_compat.py`` calls each against the installed Ray, so an upgrade that
moves one fails there with the name of the call, not deep inside a study. To upgrade Ray:
bump the pin, run that test file, and fix what it names here.

Besides these calls, :class:`weaklab.tune.search.ReplicateASHA` subclasses Tune's
``AsyncHyperBandScheduler`` and reads its attributes (:data:`ASHA_ATTRIBUTES`), and
``fake_cluster`` logs under ``ray.autoscaler._private`` (a logger name, so its lines land
in the autoscaler's monitor.log); the test checks the attributes too. :func:`atomic_experiment_uploads`
replaces Tune's private upload to local storage by one that writes each file atomically.
"""

from __future__ import annotations

from typing import Any

#: private attributes of ``ray.tune.schedulers.AsyncHyperBandScheduler`` (and of its
#: bracket) that ReplicateASHA reads
ASHA_ATTRIBUTES = ("_time_attr", "_metric", "_metric_op", "_max_t", "_stop_last_trials", "_brackets",
                   "_num_stopped")


def restored_checkpoint(restore_arg: Any):
    """The checkpoint inside what Tune passes to ``Trainable.restore`` after a failure or
    a resume (a private ``_TrainingResult``), or None when it passed something else
    (a path, a plain Checkpoint) that the base class handles as it is."""
    from ray.train._internal.session import _TrainingResult

    return restore_arg.checkpoint if isinstance(restore_arg, _TrainingResult) else None


def with_checkpoint(restore_arg: Any, checkpoint):
    """``restore_arg`` (a ``_TrainingResult``) pointing at ``checkpoint`` instead."""
    from ray.train._internal.session import _TrainingResult

    return _TrainingResult(checkpoint=checkpoint, metrics=restore_arg.metrics)


def fs_and_path(uri: str):
    """(pyarrow filesystem, path) of a Tune storage path or URI, as Tune resolves it."""
    from ray.train._internal.storage import get_fs_and_path

    return get_fs_and_path(uri)


def newest_experiment_state(fs_path: str, fs) -> str | None:
    """The newest ``experiment_state-*.json`` of the experiment at ``fs_path``, or None."""
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint

    return _find_newest_experiment_checkpoint(fs_path, fs=fs)


def auto_address() -> str | None:
    """The address ``ray.init(address="auto")`` would join: the cluster last started on this
    machine with ``ray start``/``ray up``; None when there is none."""
    from ray._private.services import canonicalize_bootstrap_address

    try:
        return canonicalize_bootstrap_address("auto") or None
    except (ConnectionError, ValueError):
        return None


def reported_cluster_config():
    """The cluster config an autoscaler reported to the GCS (KubeRay / autoscaler v2):
    its ``node_group_configs``; None when none was reported."""
    import ray._private.state

    return ray._private.state.state.get_cluster_config()


def node_ip_address() -> str:
    """This machine's address as Ray's nodes see it."""
    from ray._private.services import get_node_ip_address

    return get_node_ip_address()


def gcs_client(address: str):
    """A client of the GCS at ``address`` (``internal_kv_get`` reads the autoscaler's report)."""
    from ray._raylet import GcsClient

    return GcsClient(address=address)


def prepare_autoscaler_config(config: dict) -> dict:
    """A `ray up` cluster config with Ray's defaults filled in, as `ray up` does."""
    from ray.autoscaler._private.util import prepare_config

    return prepare_config(config)


def fake_multi_node_provider() -> type:
    """Ray's fake multi-node node provider class (real Ray nodes as processes on this machine)."""
    from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

    return FakeMultiNodeProvider


def asha_rungs(bracket) -> list:
    """The (milestone, recorded results) rungs of an ASHA bracket."""
    return bracket._rungs


def _is_local(fs) -> bool:
    import pyarrow.fs as pafs

    while isinstance(fs, pafs.SubTreeFileSystem):
        fs = fs.base_fs
    return isinstance(fs, pafs.LocalFileSystem)


def _atomic_upload(local_path: str, fs, fs_path: str, exclude=None) -> None:
    """Tune's upload of a folder to local (or NFS) storage, each file written under a
    hidden temporary name and renamed, so a driver killed mid-sync leaves the previous
    ``experiment_state-*.json`` whole instead of a truncated one that cannot resume.
    Object stores already replace an object in one PUT: those go through Tune's own."""
    import os
    import uuid

    import pyarrow.fs as pafs

    if exclude or not os.path.isdir(local_path) or not _is_local(fs):
        return _TUNE_UPLOAD(local_path=local_path, fs=fs, fs_path=fs_path, exclude=exclude)
    for root, _, files in os.walk(local_path):
        rel = os.path.relpath(root, local_path)
        folder = fs_path if rel == "." else f"{fs_path.rstrip('/')}/{rel}"
        fs.create_dir(folder, recursive=True)
        for name in files:
            tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
            pafs.copy_files(os.path.join(root, name), tmp, destination_filesystem=fs)
            fs.move(tmp, f"{folder}/{name}")  # rename: replaces the old file atomically on POSIX


_TUNE_UPLOAD = None


def atomic_experiment_uploads() -> None:
    """Make Tune's driver-side uploads to local storage atomic per file (idempotent)."""
    global _TUNE_UPLOAD
    from ray.train._internal import storage

    if storage._upload_to_fs_path is not _atomic_upload:
        _TUNE_UPLOAD = storage._upload_to_fs_path
        storage._upload_to_fs_path = _atomic_upload
