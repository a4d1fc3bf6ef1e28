"""A twin of ``cluster.yaml`` on Ray's fake multi-node provider: the real autoscaler, one machine.

:func:`twin_config` derives the twin from the cluster file, so the two cannot drift: the
same node types with the same resources, the same head, the same upscaling speed and
everything else, except

- the provider: Ray's fake multi-node provider (``ray/autoscaler/_private/fake_multi_node``),
  which starts each worker "node" as a raylet on this machine that declares its node
  type's resources, GPUs included (the engine then trains on the CPU: there is no GPU),
  through :class:`SpotFakeProvider`, which adds what a cloud does on a spot reclaim;
- the scaling in :data:`SCALE` (:class:`Scale`): worker counts x 1/4 and an idle timeout of
  15 s instead of 10 min, so a 2-core machine can hold the nodes and see them stop;
- ``file_mounts``: a fake node shares this machine's files, nothing is copied;
- the head type's name: ``ray.head.default``, the name the fake provider gives its head.

:func:`start` runs ``RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=TWIN`` in a
temporary folder of its own; :meth:`FakeCluster.stop` ends exactly the processes of that
cluster (found by a marker in their environment; ``ray stop`` would end every Ray on the
machine). ``python -m weaklab.tune.fake_cluster cluster.yaml STUDY [weaklab run options]``
is the rehearsal: the study on the twin, the autoscaler's scaling events, the idle stop.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Mapping

from ray.autoscaler.tags import NODE_KIND_WORKER, TAG_RAY_NODE_KIND

from weaklab.registry import ConfigError
from weaklab.tune import _ray_compat

# a child of Ray's autoscaler logger, so its lines land in the autoscaler's monitor.log
logger = logging.getLogger("ray.autoscaler._private.weaklab_spot")

#: marks every process of one fake cluster (inherited by all its children) for stop()
MARKER = "WEAKLAB_FAKE_CLUSTER"
#: the autoscaler's status in the GCS key-value store (what `ray status` prints)
STATUS_KEY = b"__autoscaling_status"
#: the head's node type under Ray's fake provider (FAKE_HEAD_NODE_TYPE there)
FAKE_HEAD_TYPE = "ray.head.default"
#: the smallest trial the runner starts: --cpus-per-trial defaults to 1 (RunOptions)
MIN_TRIAL_CPUS = 1.0


class SpotFakeProvider(_ray_compat.fake_multi_node_provider()):
    """Ray's FakeMultiNodeProvider, plus what a cloud does after a spot reclaim: a worker
    whose raylet has died is no longer listed (AWS reports the instance terminated), so
    the autoscaler counts it gone and can start a replacement. Ray's provider would list
    it for ever, as an "uninitialized" node the autoscaler waits for."""

    def non_terminated_nodes(self, tag_filters):
        with self.lock:
            for node_id, node in list(self._nodes.items()):
                raylets = getattr(node.get("node"), "all_processes", {}).get("raylet") or []
                if node["tags"].get(TAG_RAY_NODE_KIND) == NODE_KIND_WORKER and raylets \
                        and raylets[0].process.poll() is not None:
                    self._nodes.pop(node_id)
                    # what is left of the node (its log monitor) goes with it
                    node["node"].kill_all_processes(check_alive=False, allow_graceful=False)
                    logger.info(f"SpotFakeProvider: node {node_id} is gone (its raylet died: a reclaim)")
        return super().non_terminated_nodes(tag_filters)


#: the twin's provider (Ray's fake multi-node provider through SpotFakeProvider)
PROVIDER_MODULE = "weaklab.tune.fake_cluster.SpotFakeProvider"


@dataclasses.dataclass(frozen=True)
class Scale:
    """How the twin shrinks ``cluster.yaml`` to one small machine; nothing else differs."""

    workers: float = 0.25
    """``max_workers`` and ``min_workers`` (of the cluster and of each node type) times
    this, rounded up (so 0 stays 0 and 1 stays 1): each fake node is a raylet and two
    agent processes on this machine. cluster.yaml's 8 / gpu1 8 / gpu4 2 become 2 / 2 / 1."""
    idle_timeout_minutes: float = 0.25
    """replaces ``idle_timeout_minutes`` (10 in cluster.yaml: x 1/40), so an idle worker
    stops within seconds of the study's end; 6 s raced a loaded machine's trial placement
    (the node looked idle before the study's actors reached it)"""
    object_store_bytes: int = 100 * 2**20
    """object store of each fake worker node (on AWS: Ray's default, 30 % of the
    instance's memory); studies pass only small objects"""
    update_interval_s: int = 1
    """the autoscaler's AUTOSCALER_UPDATE_INTERVAL_S (default 5)"""

    def workers_of(self, n: int) -> int:
        return int(math.ceil(n * self.workers))


SCALE = Scale()


def load(path: str) -> dict[str, Any]:
    import yaml

    with open(path) as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ConfigError(f"cluster file {path!r} is not allowed: not a YAML mapping (a `ray up` cluster config)")
    return config


def check_node_types(config: Mapping[str, Any]) -> None:
    """Raise ConfigError naming the node type unless the head runs no trial and every
    worker type the autoscaler may start holds at least one trial (``MIN_TRIAL_CPUS``).

    The head runs the Tune driver and the autoscaler; a trial placed there would compete
    with them (README, "Running on a Ray cluster"): its ``resources`` must offer no CPU
    and no GPU, so no trial (which always asks for CPUs) can be placed on it.
    """
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    if head not in types:
        raise ConfigError(f"head_node_type={head!r} is not allowed: it must name one of available_node_types "
                          f"({', '.join(types) or 'none'})")
    head_res = (types[head] or {}).get("resources")
    if head_res is None or any(float(head_res.get(k, 0)) > 0 for k in ("CPU", "GPU")):
        raise ConfigError(f"available_node_types.{head}.resources={head_res!r} is not allowed: node type {head} "
                          f"is the head, which must run no trial: give it resources: {{CPU: 0}}")
    startable = 0
    for name, t in types.items():
        if name == head:
            continue
        t = t or {}
        if int(t.get("max_workers", config.get("max_workers", 0))) == 0:
            continue
        startable += 1
        cpus = float((t.get("resources") or {}).get("CPU", 0))
        if cpus < MIN_TRIAL_CPUS:
            raise ConfigError(f"available_node_types.{name}.resources.CPU={cpus:g} is not allowed: node type {name} "
                              f"cannot hold one trial (a trial takes --cpus-per-trial, at least "
                              f"{MIN_TRIAL_CPUS:g} by default); give it CPU >= {MIN_TRIAL_CPUS:g} or max_workers: 0")
    if not startable:
        raise ConfigError("available_node_types is not allowed: no worker node type with max_workers > 0, so no "
                          "trial can ever run (the head runs none)")


def twin_config(config: Mapping[str, Any], *, gcs_address: str | None = None, scale: Scale = SCALE) -> dict[str, Any]:
    """The fake-provider twin of a `ray up` cluster config (raw, as read from the file).

    ``prepare_config`` fills in Ray's defaults first, as `ray up` does, since the
    autoscaler reads the twin as it stands. ``gcs_address``: where the fake provider's
    nodes find the head (default: this machine's port 6379).
    """
    check_node_types(config)
    twin = _ray_compat.prepare_autoscaler_config(copy.deepcopy(dict(config)))
    provider = {"type": "external", "module": PROVIDER_MODULE, "use_node_id_as_ip": True,
                "disable_node_updaters": True, "disable_launch_config_check": True}
    if gcs_address:
        provider["gcs_address"] = gcs_address
    twin["provider"] = provider
    twin["file_mounts"] = {}
    twin["max_workers"] = scale.workers_of(twin["max_workers"])
    twin["idle_timeout_minutes"] = scale.idle_timeout_minutes
    # the fake provider tags its head with this type name; under another name the
    # autoscaler would miss the head and launch "head" workers
    head = FAKE_HEAD_TYPE
    twin["available_node_types"] = {head if name == twin["head_node_type"] else name: t
                                    for name, t in twin["available_node_types"].items()}
    twin["head_node_type"] = head
    for name, t in twin["available_node_types"].items():
        if name == head:
            continue
        t["min_workers"] = scale.workers_of(t.get("min_workers", 0))
        t["max_workers"] = scale.workers_of(t.get("max_workers", config.get("max_workers", 0)))
        t["resources"] = {**t.get("resources", {}), "object_store_memory": scale.object_store_bytes}
    return twin


def diff_from_cluster(twin: Mapping[str, Any], config: Mapping[str, Any], *, scale: Scale = SCALE) -> list[str]:
    """What differs between a twin and the cluster config beyond the provider and
    ``scale`` (empty: they agree). Compared with the raw file, not through twin_config."""
    full = _ray_compat.prepare_autoscaler_config(copy.deepcopy(dict(config)))  # defaults the raw file leaves out
    head = full["head_node_type"]
    want_types = {FAKE_HEAD_TYPE if name == head else name: t for name, t in full["available_node_types"].items()}
    out = []
    for key in sorted(set(full) | set(twin)):
        if key in ("provider", "file_mounts", "available_node_types"):
            continue
        want = {"max_workers": scale.workers_of(full["max_workers"]), "idle_timeout_minutes": scale.idle_timeout_minutes,
                "head_node_type": FAKE_HEAD_TYPE}.get(key, full.get(key))
        if twin.get(key) != want:
            out.append(f"{key}: twin {twin.get(key)!r}, cluster file gives {want!r}")
    provider = twin.get("provider") or {}
    if (provider.get("type"), provider.get("module")) != ("external", PROVIDER_MODULE):
        out.append(f"provider: twin type {provider.get('type')!r} module {provider.get('module')!r}, want "
                   f"'external' {PROVIDER_MODULE!r}")
    if twin.get("file_mounts") != {}:
        out.append(f"file_mounts: twin {twin.get('file_mounts')!r}, want {{}} (a fake node shares this machine's files)")
    types = twin.get("available_node_types", {})
    for name in sorted(set(types) | set(want_types)):
        if name not in types or name not in want_types:
            out.append(f"node type {name}: only in the {'twin' if name in types else 'cluster file'}")
            continue
        t, w = dict(types[name]), dict(want_types[name])
        res = dict(t.get("resources", {}))
        if name != FAKE_HEAD_TYPE:
            if res.pop("object_store_memory", None) != scale.object_store_bytes:
                out.append(f"node type {name}: object_store_memory is not the scale's {scale.object_store_bytes}")
            for k in ("min_workers", "max_workers"):
                w[k] = scale.workers_of(w.get(k, full["max_workers"] if k == "max_workers" else 0))
        t["resources"] = res
        for k in sorted(set(t) | set(w)):
            if t.get(k) != w.get(k):
                out.append(f"node type {name}: {k}: twin {t.get(k)!r}, cluster file gives {w.get(k)!r}")
    return out


# -- running the twin --------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _marked_pids(value: str) -> list[int]:
    """Processes whose environment carries MARKER=value (Linux /proc)."""
    needle = f"{MARKER}={value}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:  # gone, or not ours to read
            pass
    return pids


def _kill(pids: list[int], grace_s: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 5)
        while time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            if not pids:
                return
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


@dataclasses.dataclass
class FakeCluster:
    """A running twin: its head's GCS address and the folder holding its files."""

    address: str
    """``host:port`` of the head's GCS, for ``--address``"""
    temp_dir: str
    """Ray's --temp-dir for this cluster (sessions, logs) and the twin file"""
    twin_path: str
    """the autoscaling config the autoscaler reads"""
    config: dict[str, Any]
    """the twin as written"""
    _gcs: Any = dataclasses.field(default=None, repr=False)

    def status(self) -> dict[str, Any]:
        """The autoscaler's last report (``ray status``): ``autoscaler_report`` holds
        active/pending/failed nodes per type and ``node_type_mapping`` (node id -> type)."""
        if self._gcs is None:
            self._gcs = _ray_compat.gcs_client(self.address)
        raw = self._gcs.internal_kv_get(STATUS_KEY, None)
        return json.loads(raw) if raw else {}

    def workers(self) -> dict[str, str]:
        """Node id -> node type of the worker nodes the autoscaler counts as running."""
        report = self.status().get("autoscaler_report") or {}
        return {n: t for n, t in (report.get("node_type_mapping") or {}).items() if t != FAKE_HEAD_TYPE}

    def monitor_log(self) -> str:
        paths = [os.path.join(self.temp_dir, "session_latest", "logs", n) for n in ("monitor.log",)]
        return "".join(open(p, errors="replace").read() for p in paths if os.path.exists(p))

    def scaling_events(self) -> list[str]:
        """The autoscaler's launch and termination lines, with their times (monitor.log)."""
        pat = re.compile(r"(Adding \d+ node\(s\) of type \S+|Terminating the node with id \S+ and ip \S+\. \([^)]*\)|"
                         r"Removing \d+ nodes? of type \S+ \([^)]*\)|SpotFakeProvider: node \S+ is gone[^\n]*)")
        out = []
        for line in self.monitor_log().splitlines():
            m = pat.search(line)
            if m:
                out.append(f"{line[:23]} {line[m.start():].strip()}")
        return out

    def reclaim(self, node_id: str) -> list[int]:
        """A spot reclaim: the worker node's machine vanishes with every process on it
        (its raylet, agents and trial workers, killed at once); at its next update the
        autoscaler finds it gone from the provider (SpotFakeProvider), as on AWS."""
        roots = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\0", b" ")
                except OSError:
                    continue
                if re.search(rb"--node[-_]id=" + re.escape(node_id.encode()) + rb"(\s|$)", cmd):
                    roots.append(int(entry))
        doomed = set(roots)
        for pid in roots:
            stack = [pid]
            while stack:
                for c in _children(stack.pop()):
                    if c not in doomed:
                        doomed.add(c)
                        stack.append(c)
        for pid in doomed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return sorted(doomed)

    def stop(self, *, keep_files: bool = False) -> None:
        """End every process of this cluster (the head's, the fake nodes', their
        workers'), and nothing else on the machine; then remove its folder."""
        _kill(_marked_pids(self.temp_dir), grace_s=5)
        if not keep_files:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def start(cluster_yaml: str, *, scale: Scale = SCALE, temp_dir: str | None = None,
          timeout_s: float = 120) -> FakeCluster:
    """Start the twin of ``cluster_yaml``: its head with the head type's resources and
    the autoscaler on the twin. Raises ConfigError on a bad cluster file before Ray."""
    config = load(cluster_yaml)
    check_node_types(config)
    # short: Ray's unix sockets live below it (a path limit of ~107 characters)
    temp_dir = temp_dir or tempfile.mkdtemp(prefix="wlfc-", dir="/tmp")
    port = _free_port()
    address = f"{_ray_compat.node_ip_address()}:{port}"
    twin = twin_config(config, gcs_address=address, scale=scale)
    twin_path = os.path.join(temp_dir, "twin.yaml")
    import yaml

    with open(twin_path, "w") as f:
        f.write(f"# fake-provider twin of {os.path.abspath(cluster_yaml)} (weaklab.tune.fake_cluster, {scale})\n")
        yaml.safe_dump(twin, f, sort_keys=False)
    head = twin["available_node_types"][twin["head_node_type"]]["resources"]
    cluster = FakeCluster(address=address, temp_dir=temp_dir, twin_path=twin_path, config=twin)
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", MARKER: temp_dir,
           "AUTOSCALER_UPDATE_INTERVAL_S": str(scale.update_interval_s),
           # no token: a `ray start` would otherwise turn token auth on whenever ~/.ray/auth_token
           # exists (any earlier local ray.init writes one), and clients here may not send it
           "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    beside = os.path.join(os.path.dirname(sys.executable), "ray")  # the ray of this Python
    cmd = [beside if os.path.exists(beside) else "ray", "start", "--head", f"--port={port}", f"--temp-dir={temp_dir}",
           f"--autoscaling-config={twin_path}", f"--num-cpus={int(head.get('CPU', 0))}",
           f"--num-gpus={int(head.get('GPU', 0))}", f"--object-store-memory={scale.object_store_bytes}",
           "--include-dashboard=false", "--disable-usage-stats",
           f"--dashboard-agent-listen-port={_free_port()}"]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr[-2000:]}")
        deadline = time.monotonic() + timeout_s
        while not cluster.status():  # the autoscaler's first report: it has read the twin
            if time.monotonic() > deadline:
                raise RuntimeError(f"the autoscaler reported nothing within {timeout_s:g} s; see {temp_dir}")
            time.sleep(0.5)
    except BaseException:
        cluster.stop(keep_files=True)
        raise
    return cluster


# -- the rehearsal -----------------------------------------------------------------------

def wait_idle_stop(cluster: FakeCluster, timeout_s: float) -> float | None:
    """Seconds until the autoscaler has no worker left (None: not within timeout_s)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if not cluster.workers() and not (cluster.status().get("autoscaler_report") or {}).get("pending_nodes"):
            return time.monotonic() - t0
        time.sleep(0.5)
    return None


def rehearse(argv: list[str] | None = None) -> int:
    """``python -m weaklab.tune.fake_cluster CLUSTER_YAML STUDY [weaklab run options]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0].startswith("-"):
        print("usage: python -m weaklab.tune.fake_cluster CLUSTER_YAML STUDY [weaklab run options, e.g. --smoke "
              "--gpus-per-trial 0.25]", file=sys.stderr)
        return 2
    cluster_yaml, study, rest = argv[0], argv[1], argv[2:]
    if "--address" in rest or any(a.startswith("--address=") for a in rest):
        print("weaklab: error: --address is not allowed here: the rehearsal runs on its own fake cluster",
              file=sys.stderr)
        return 2
    try:
        cluster = start(cluster_yaml)
    except ConfigError as e:
        print(f"weaklab: error: {e}", file=sys.stderr)
        return 2
    print(f"weaklab: fake cluster of {cluster_yaml} at {cluster.address} ({SCALE}); twin {cluster.twin_path}",
          flush=True)
    os.environ["WEAKLAB_AUTOSCALER_CONFIG"] = cluster.twin_path  # the preflight reads the node types here
    rc = 1
    try:
        from weaklab.cli import main

        rc = main(["run", study, "--address", cluster.address, *rest])
        if rc == 0:
            took = wait_idle_stop(cluster, timeout_s=120)
            print(f"weaklab: workers stopped {took:.0f} s after the study" if took is not None
                  else "weaklab: workers still up 120 s after the study", flush=True)
            rc = 0 if took is not None else 1
        print("weaklab: autoscaler events:\n  " + "\n  ".join(cluster.scaling_events() or ["(none)"]), flush=True)
    finally:
        import ray

        ray.shutdown()
        cluster.stop()
    return rc


if __name__ == "__main__":
    from weaklab.tune.fake_cluster import rehearse as _rehearse  # the importable module, not __main__

    sys.exit(_rehearse())
