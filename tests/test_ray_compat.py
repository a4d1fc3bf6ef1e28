"""Each private Ray call of ``weaklab.tune._ray_compat`` against the installed Ray: an
upgrade that moves one fails here, naming it (see that module for the pin)."""

import json

import pyarrow.fs as pafs
import pytest

from weaklab.tune import _ray_compat


def test_restored_checkpoint_unwraps_what_tune_passes_to_restore(tmp_path):
    from ray import tune
    from ray.train._internal.session import _TrainingResult

    a, b = tune.Checkpoint.from_directory(str(tmp_path)), tune.Checkpoint.from_directory(str(tmp_path / "b"))
    arg = _TrainingResult(checkpoint=a, metrics={"epoch": 3})
    assert _ray_compat.restored_checkpoint(arg) is a
    assert _ray_compat.restored_checkpoint(str(tmp_path)) is None  # a plain path: the base class's
    moved = _ray_compat.with_checkpoint(arg, b)
    assert _ray_compat.restored_checkpoint(moved) is b and moved.metrics == {"epoch": 3}


def test_fs_and_path_and_newest_experiment_state(tmp_path):
    fs, path = _ray_compat.fs_and_path(str(tmp_path))
    assert isinstance(fs, pafs.FileSystem) and path.rstrip("/").endswith(tmp_path.name)
    assert _ray_compat.newest_experiment_state(path, fs) is None
    for stamp in ("2026-01-01_00-00-00", "2026-01-02_00-00-00"):
        (tmp_path / f"experiment_state-{stamp}.json").write_text(json.dumps({"trial_data": [], "runner_data": {}}))
    assert _ray_compat.newest_experiment_state(path, fs).endswith("experiment_state-2026-01-02_00-00-00.json")


def test_auto_address_is_none_without_a_started_cluster(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # no ray_current_cluster file there
    found = _ray_compat.auto_address()
    assert found is None or ":" in found  # a `ray start` on this machine is found, never an error


def test_node_ip_address():
    ip = _ray_compat.node_ip_address()
    assert isinstance(ip, str) and ip.count(".") == 3 or ":" in ip


def test_prepare_autoscaler_config_fills_rays_defaults():
    import os

    import yaml

    root = os.path.join(os.path.dirname(__file__), "..")
    with open(os.path.join(root, "cluster.yaml")) as f:
        raw = yaml.safe_load(f)
    full = _ray_compat.prepare_autoscaler_config(dict(raw))
    assert full["head_node_type"] == raw["head_node_type"]
    assert set(raw["available_node_types"]) <= set(full["available_node_types"])
    assert "idle_timeout_minutes" in full


def test_fake_multi_node_provider_is_a_node_provider():
    from ray.autoscaler.node_provider import NodeProvider

    cls = _ray_compat.fake_multi_node_provider()
    assert issubclass(cls, NodeProvider)
    for name in ("create_node", "terminate_node", "non_terminated_nodes"):
        assert callable(getattr(cls, name)), name


def test_asha_attributes_and_rungs():
    from ray.tune.schedulers import AsyncHyperBandScheduler

    s = AsyncHyperBandScheduler(metric="m", mode="max", grace_period=1, max_t=8, brackets=1)
    missing = [a for a in _ray_compat.ASHA_ATTRIBUTES if not hasattr(s, a)]
    assert not missing, f"AsyncHyperBandScheduler lost {missing}: weaklab.tune.search.ReplicateASHA reads them"
    rungs = _ray_compat.asha_rungs(s._brackets[0])
    assert [m for m, _ in rungs] == sorted((m for m, _ in rungs), reverse=True) and rungs


@pytest.mark.slow
def test_gcs_client_and_reported_cluster_config(ray_local):
    address = ray_local.get_runtime_context().gcs_address
    client = _ray_compat.gcs_client(address)
    assert client.internal_kv_get(b"weaklab-no-such-key", None) is None
    cfg = _ray_compat.reported_cluster_config()  # no autoscaler reported one here
    assert cfg is None or hasattr(cfg, "node_group_configs")


def test_atomic_experiment_uploads_never_leave_a_truncated_state(tmp_path, monkeypatch):
    """Tune's upload of the driver's staging folder (its experiment state) goes through
    weaklab's per-file temporary name and rename: a copy that dies midway leaves the
    previous state file whole (CI once resumed from a truncated experiment_state-*.json)."""
    import pyarrow.fs as pafs
    from ray.train._internal import storage

    _ray_compat.atomic_experiment_uploads()
    _ray_compat.atomic_experiment_uploads()  # idempotent: never wraps itself
    assert storage._upload_to_fs_path is _ray_compat._atomic_upload
    assert _ray_compat._TUNE_UPLOAD is not _ray_compat._atomic_upload
    staging, dest = tmp_path / "staging", tmp_path / "exp"
    (staging / "sub").mkdir(parents=True)
    (staging / "experiment_state-x.json").write_text('{"trial_data": [1]}')
    (staging / "sub" / "searcher-state.pkl").write_bytes(b"abc")
    fs = pafs.LocalFileSystem()
    storage._upload_to_fs_path(local_path=str(staging), fs=fs, fs_path=str(dest))
    assert (dest / "experiment_state-x.json").read_text() == '{"trial_data": [1]}'
    assert (dest / "sub" / "searcher-state.pkl").read_bytes() == b"abc"

    (staging / "experiment_state-x.json").write_text('{"trial_data": [1, 2]}')
    real_copy = pafs.copy_files

    def dies_midway(src, dst, **kw):  # writes half of the file, then the driver "dies"
        data = open(src, "rb").read()
        with kw["destination_filesystem"].open_output_stream(dst) as f:
            f.write(data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(pafs, "copy_files", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        storage._upload_to_fs_path(local_path=str(staging), fs=fs, fs_path=str(dest))
    monkeypatch.setattr(pafs, "copy_files", real_copy)
    assert (dest / "experiment_state-x.json").read_text() == '{"trial_data": [1]}'  # the last whole one
    storage._upload_to_fs_path(local_path=str(staging), fs=fs, fs_path=str(dest))
    assert (dest / "experiment_state-x.json").read_text() == '{"trial_data": [1, 2]}'
