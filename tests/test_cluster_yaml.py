"""cluster.yaml against Ray's own autoscaler schema, offline.

``prepare_config`` (merge with the AWS provider defaults, setup-command merging, per-type
min/max workers) and ``validate_config`` (ray-schema.json through jsonschema plus the
head/min-workers checks) are pure for ``provider.type: aws`` in the pinned Ray: they
read bundled files only. What ``ray up`` does next, ``bootstrap_config`` (IAM role,
key pair, subnets, security group, AMI lookup), calls AWS through boto3 and is not run
here.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"


def _load(path: Path = CLUSTER_YAML) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def _ray_checked(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _pyproject_pins() -> tuple[str, str]:
    text = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)
    ray_pin = re.search(r'"ray\[tune\]==([^"]+)"', text).group(1)
    return version, ray_pin


def test_cluster_yaml_passes_rays_schema_and_checks():
    prepared = _ray_checked(_load())
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    # the head runs the driver only: no trial can ever be placed on it
    assert head["resources"].get("CPU") == 0
    assert head["max_workers"] == 0
    workers = {name: t for name, t in types.items() if name != prepared["head_node_type"]}
    gpus = sorted(t["resources"].get("GPU", 0) for t in workers.values())
    assert gpus[0] == 1 and gpus[-1] > 1, f"want a single-GPU and a multi-GPU worker type, got GPU counts {gpus}"
    for name, t in workers.items():
        assert 0 <= t["min_workers"] <= t["max_workers"] <= prepared["max_workers"], name
        assert t["resources"].get("CPU", 0) >= 1, name
    assert prepared["idle_timeout_minutes"] > 0
    assert prepared["provider"]["type"] == "aws"


def test_cluster_yaml_pins_project_and_ray_versions():
    version, ray_pin = _pyproject_pins()
    prepared = _ray_checked(_load())
    for key in ("head_setup_commands", "worker_setup_commands"):
        cmds = " ".join(prepared[key])
        assert f"ray[default,tune]=={ray_pin}" in cmds, f"{key} must pin ray to {ray_pin} like pyproject.toml"
        assert re.search(rf'"weaklab @ git\+https://\S+@v{re.escape(version)}"', cmds), \
            f"{key} must install weaklab at the tag v{version}"
        assert "WEAKLAB_STORAGE=s3://" in cmds, f"{key} must export the S3 experiment storage"


def test_cluster_yaml_exposes_only_ssh():
    config = _load()
    # the launcher's security group = intra-cluster + TCP 22; extra IpPermissions would open more
    assert "IpPermissions" not in config["provider"].get("security_group", {})
    for name, t in config["available_node_types"].items():
        assert "SecurityGroupIds" not in t["node_config"], f"{name}: a hand-made security group bypasses the check"
    start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start, "the dashboard must be reached through `ray dashboard` only"
    assert "0.0.0.0" not in start
    # datasets come in as a file mount of a repo-relative folder
    assert any(local.startswith("./") for local in config["file_mounts"].values())


@pytest.mark.parametrize("where, good, bad", [
    ("top", "idle_timeout_minutes", "idle_timout_minutes"),
    ("node_type", "min_workers", "min_worker"),
])
def test_misspelled_key_fails_validation(tmp_path, where, good, bad):
    import jsonschema

    text = CLUSTER_YAML.read_text()
    pattern = rf"^(\s*){good}:" if where == "node_type" else rf"^{good}:"
    replacement = rf"\g<1>{bad}:" if where == "node_type" else f"{bad}:"
    broken, n = re.subn(pattern, replacement, text, count=1, flags=re.M)
    assert n == 1, f"{good} not found in cluster.yaml"
    path = tmp_path / "cluster.yaml"
    path.write_text(broken)
    with pytest.raises(jsonschema.ValidationError, match=bad):
        _ray_checked(_load(path))


# -- the fake-provider twin (weaklab.tune.fake_cluster; run by tests/test_autoscaler.py) --

def test_fake_twin_differs_only_in_provider_and_scale():
    from weaklab.tune.fake_cluster import FAKE_HEAD_TYPE, PROVIDER_MODULE, SCALE, diff_from_cluster, twin_config

    raw = _load()
    twin = twin_config(raw, gcs_address="127.0.0.1:6379")
    assert diff_from_cluster(twin, raw) == []
    # what the scale states, on cluster.yaml's numbers
    assert twin["provider"]["module"] == PROVIDER_MODULE and twin["head_node_type"] == FAKE_HEAD_TYPE
    assert twin["max_workers"] == 2 and twin["idle_timeout_minutes"] == SCALE.idle_timeout_minutes
    types = twin["available_node_types"]
    assert {n: (t["resources"].get("CPU"), t["resources"].get("GPU", 0), t["max_workers"]) for n, t in types.items()} \
        == {FAKE_HEAD_TYPE: (0, 0, 0), "gpu1": (8, 1, 2), "gpu4": (48, 4, 1)}
    # Ray's own checks pass on the twin too (the autoscaler validates what it reads)
    from ray.autoscaler._private.util import validate_config

    validate_config(twin)


@pytest.mark.parametrize("drift, found", [
    (lambda t: t["available_node_types"]["gpu1"]["resources"].update(GPU=2), "node type gpu1: resources"),
    (lambda t: t["available_node_types"]["gpu4"].update(max_workers=2), "node type gpu4: max_workers"),
    (lambda t: t["available_node_types"].pop("gpu4"), "node type gpu4: only in the cluster file"),
    (lambda t: t["available_node_types"].update(cpu8={"resources": {"CPU": 8}}), "node type cpu8: only in the twin"),
    (lambda t: t.update(upscaling_speed=4.0), "upscaling_speed"),
    (lambda t: t.update(idle_timeout_minutes=10), "idle_timeout_minutes"),
    (lambda t: t["available_node_types"]["ray.head.default"]["resources"].update(CPU=2), "node type ray.head.default"),
    (lambda t: t["provider"].update(type="aws"), "provider:"),
])
def test_fake_twin_drift_is_found(drift, found):
    from weaklab.tune.fake_cluster import diff_from_cluster, twin_config

    raw = _load()
    twin = twin_config(raw)
    drift(twin)
    diffs = diff_from_cluster(twin, raw)
    assert any(d.startswith(found) for d in diffs), diffs


@pytest.mark.parametrize("edit, message", [
    # a worker type with no CPU: no trial (which always asks for CPUs) fits on it
    (("resources: {CPU: 48, GPU: 4}", "resources: {GPU: 4}"),
     r"available_node_types.gpu4.resources.CPU=0 is not allowed: node type gpu4 cannot hold one trial"),
    (("resources: {CPU: 8, GPU: 1}", "resources: {CPU: 0.5, GPU: 1}"),
     r"available_node_types.gpu1.resources.CPU=0.5 is not allowed: node type gpu1 cannot hold one trial"),
    # a head that offers CPUs would run trials beside the driver and the autoscaler
    (("    resources: {CPU: 0}\n", "    resources: {CPU: 4}\n"),
     r"available_node_types.head.resources=\{'CPU': 4\} is not allowed: node type head is the head, which must run "
     r"no trial"),
    (("    resources: {CPU: 0}\n", "    resources: {CPU: 0, GPU: 1}\n"), r"node type head is the head, which must run no trial"),
])
def test_cluster_file_that_cannot_hold_a_trial_or_runs_trials_on_head(tmp_path, edit, message):
    from weaklab.registry import ConfigError
    from weaklab.tune.fake_cluster import twin_config

    text = CLUSTER_YAML.read_text()
    assert text.count(edit[0]) == 1, edit[0]
    path = tmp_path / "cluster.yaml"
    path.write_text(text.replace(*edit))
    with pytest.raises(ConfigError, match=message) as e:
        twin_config(_load(path))
    assert "\n" not in str(e.value)
