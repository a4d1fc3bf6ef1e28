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
