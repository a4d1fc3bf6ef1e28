"""Pre-flight checks for running a study on a Ray cluster, with one-line errors.

:func:`preflight` is what the study runner calls before any Tune work. It catches, with a
:class:`~weaklab.registry.ConfigError` naming the flag and the value, what would otherwise
show up as a hang, a stack trace or a study whose every trial fails:

- ``--address`` that nothing answers at (a short TCP connect to the GCS, not Ray's
  minute-long retry loop); ``auto`` needs a cluster started on this machine;
- ``--storage`` whose filesystem pyarrow cannot open (bad scheme, pyarrow without S3),
  a local folder that cannot be created or written, or a local folder on a cluster whose
  nodes live on other machines (Tune needs storage every node can reach);
- ``--cpus-per-trial`` / ``--gpus-per-trial`` that no node of the cluster, nor any node
  type the autoscaler may start (``available_node_types`` of ``ray up``'s cluster.yaml),
  can ever offer: Tune would otherwise wait for resources forever.

Checks on the value alone (ranges, whole GPUs above 1) belong to the CLI/runner; here
only what depends on the cluster.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Iterable, Mapping, Sequence

from weaklab.registry import ConfigError

#: seconds to wait for the GCS port to accept a TCP connection
CONNECT_TIMEOUT_S = 3.0
#: where `ray up` leaves the autoscaler config on the head node (Tune looks here too)
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
#: filesystems that every node of a cluster can share
_SHARED_FSTYPES = ("nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "beegfs", "ceph", "glusterfs", "fuse")
_EPS = 1e-9


# -- --address ---------------------------------------------------------------------------

def _host_port(address: str, default_port: int) -> tuple[str, int]:
    rest = address.split("://", 1)[1] if "://" in address else address
    rest = rest.rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = rest, str(default_port)
    host = host.strip("[]")  # [::1]:6379
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--address={address!r} is not allowed: HOST:PORT (the head's GCS, usually port 6379), "
                          f"ray://HOST:10001, or auto")
    return host, int(port)


def _tcp_reachable(host: str, port: int, timeout: float) -> str | None:
    """None when something accepts a TCP connection at host:port, else the reason."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.timeout:
        return f"no answer within {timeout:g} s"
    except OSError as e:
        return e.strerror or str(e)


def check_address(address: str | None, *, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """Return the ``host:port`` Ray will connect to (None: start a local Ray), or raise.

    ``None`` and ``local`` start a fresh Ray on this machine (the runner passes
    ``address="local"``, so RAY_ADDRESS is not consulted); ``auto`` is the cluster last
    started on this machine with ``ray start``/``ray up``; anything else is ``HOST:PORT``
    or ``ray://HOST:PORT``.
    """
    flag = "--address"
    if address is None or address == "local":
        return None
    if address == "auto":
        from weaklab.tune._ray_compat import auto_address

        found = auto_address()
        if not found:
            raise ConfigError(f"{flag}=auto is not allowed here: no Ray cluster was started on this machine; "
                              f"run `ray start --head` (or run on the head of `ray up cluster.yaml`), "
                              f"or give {flag} HOST:PORT")
        host, port = _host_port(found, 6379)
        why = _tcp_reachable(host, port, timeout)
        if why:
            raise ConfigError(f"{flag}=auto found {found} (the last `ray start` on this machine) but it does not "
                              f"answer ({why}): the cluster is stopped; start it again or give {flag} HOST:PORT")
        return f"{host}:{port}"
    default_port = 10001 if address.startswith("ray://") else 6379
    host, port = _host_port(address, default_port)
    why = _tcp_reachable(host, port, timeout)
    if why:
        raise ConfigError(f"{flag}={address!r} is not reachable ({why}): is the cluster up "
                          f"(`ray status` on the head) and the port open from here?")
    return address if address.startswith("ray://") else f"{host}:{port}"


# -- --storage ---------------------------------------------------------------------------

def _is_uri(storage: str) -> bool:
    return "://" in storage


def check_storage(storage: str | None) -> None:
    """Raise unless Tune can write its state and checkpoints at ``storage``.

    A plain path must be creatable and writable; a URI must name a filesystem pyarrow
    (which Tune uses) can open. A remote URI is not contacted here: that happens when
    Tune starts, with the credentials of the node it runs on.
    """
    if storage is None:
        return
    if not isinstance(storage, str) or not storage.strip():
        raise ConfigError(f"--storage={storage!r} is not allowed: a folder or a URI such as s3://bucket/prefix")
    if not _is_uri(storage) or storage.startswith("file://"):
        path = storage[len("file://"):] if storage.startswith("file://") else storage
        _check_local_folder(storage, os.path.abspath(os.path.expanduser(path)))
        return
    import pyarrow
    import pyarrow.fs

    scheme = storage.split("://", 1)[0]
    try:
        pyarrow.fs.FileSystem.from_uri(storage)
    except (pyarrow.ArrowException, OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if scheme in ("s3", "gs", "gcs", "hdfs", "abfs", "abfss", "az"):
            hint = f"this pyarrow cannot open {scheme}:// URIs ({first}); install a pyarrow built with it"
        else:
            hint = f"pyarrow cannot open it ({first}); use a folder, s3://bucket/prefix or gs://bucket/prefix"
        raise ConfigError(f"--storage={storage!r} is not allowed: {hint}") from None


def _check_local_folder(storage: str, path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--storage={storage!r} is not allowed: cannot create the folder {path} "
                          f"({e.strerror or e}); give a writable folder or an s3:// URI") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"--storage={storage!r} is not allowed: the folder {path} is not writable; "
                          f"give a writable folder or an s3:// URI")


def _fstype(path: str) -> str:
    """Filesystem type of the mount holding ``path`` ('' where unknown, e.g. not Linux)."""
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split()[:3] for line in f]
    except OSError:
        return ""
    path = os.path.realpath(path)
    best, fstype = "", ""
    for _dev, mnt, typ in (m for m in mounts if len(m) == 3):
        mnt = mnt.replace("\\040", " ")
        if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
            best, fstype = mnt, typ
    return fstype


def _storage_is_shared(storage: str | None) -> bool:
    if storage is None:
        return False
    if _is_uri(storage) and not storage.startswith("file://"):
        return True
    path = storage[len("file://"):] if storage.startswith("file://") else storage
    return _fstype(os.path.expanduser(path)).startswith(_SHARED_FSTYPES)


# -- resources ---------------------------------------------------------------------------

def node_offers(nodes: Iterable[Mapping[str, Any]]) -> list[tuple[str, dict[str, float]]]:
    """(label, total resources) of each alive node, from ``ray.nodes()``."""
    out = []
    for n in nodes:
        if n.get("Alive", n.get("alive", True)):
            label = f"node {n.get('NodeManagerAddress', '?')} ({str(n.get('NodeID', ''))[:8]})"
            out.append((label, {k: float(v) for k, v in (n.get("Resources") or {}).items()}))
    return out


def node_type_offers(config: Mapping[str, Any] | None) -> list[tuple[str, dict[str, float]]]:
    """(label, resources) of each worker node type the autoscaler may start (max_workers > 0).

    The head type is left out: the head is running already, so ``ray.nodes()`` has it.
    """
    if not config:
        return []
    head = config.get("head_node_type")
    out = []
    for name, t in (config.get("available_node_types") or {}).items():
        if name == head or t.get("max_workers", config.get("max_workers", 0)) == 0:
            continue
        out.append((f"node type {name}", {k: float(v) for k, v in (t.get("resources") or {}).items()}))
    return out


def read_autoscaler_config(path: str | None = None) -> dict[str, Any] | None:
    """The autoscaler's config that `ray up` leaves on the head, if this is such a head
    (``$WEAKLAB_AUTOSCALER_CONFIG`` instead: a head started by hand with
    ``ray start --autoscaling-config``, e.g. the rehearsal in weaklab.tune.fake_cluster)."""
    path = os.path.expanduser(path or os.environ.get("WEAKLAB_AUTOSCALER_CONFIG") or BOOTSTRAP_CONFIG)
    if not os.path.exists(path):
        return None
    import yaml

    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def _gcs_node_groups() -> list[tuple[str, dict[str, float]]]:
    """Node groups an autoscaler reported to the GCS (KubeRay / autoscaler v2), if any."""
    try:
        from weaklab.tune._ray_compat import reported_cluster_config

        cfg = reported_cluster_config()
    except Exception:  # not reported, or an API this Ray lacks: only ray.nodes() counts
        return []
    if not cfg:
        return []
    return [(f"node type {g.name}", {k: float(v) for k, v in g.resources.items()})
            for g in cfg.node_group_configs if g.max_count != 0]


def check_resources(*, cpus_per_trial: float, gpus_per_trial: float,
                    offers: Sequence[tuple[str, Mapping[str, float]]]) -> None:
    """Raise unless one node (or node type) can hold a whole trial: Tune places a trial's
    CPUs and GPUs together on one node, so the totals of the cluster do not count."""
    want = {"CPU": float(cpus_per_trial or 0), "GPU": float(gpus_per_trial or 0)}
    want = {k: v for k, v in want.items() if v > 0}
    if not want or not offers:
        return
    if any(all(res.get(k, 0.0) + _EPS >= v for k, v in want.items()) for _, res in offers):
        return
    max_gpu = max(res.get("GPU", 0.0) for _, res in offers)
    max_cpu = max(res.get("CPU", 0.0) for _, res in offers)
    shown = "; ".join(f"{label}: CPU={res.get('CPU', 0):g} GPU={res.get('GPU', 0):g}" for label, res in offers[:6])
    if len(offers) > 6:
        shown += f"; ... {len(offers) - 6} more"
    if want.get("GPU", 0) > max_gpu + _EPS:
        what = (f"--gpus-per-trial={gpus_per_trial:g} is not allowed on this cluster: "
                + ("no node has a GPU (use --gpus-per-trial 0)" if max_gpu == 0
                   else f"the most GPUs one node offers is {max_gpu:g}"))
    elif want.get("CPU", 0) > max_cpu + _EPS:
        what = (f"--cpus-per-trial={cpus_per_trial:g} is not allowed on this cluster: "
                f"the most CPUs one node offers is {max_cpu:g}")
    else:
        what = (f"--cpus-per-trial={cpus_per_trial:g} with --gpus-per-trial={gpus_per_trial:g} is not allowed on "
                f"this cluster: no single node offers both")
    raise ConfigError(f"{what}; trials would wait forever ({shown})")


def _multi_host(offers_now: Sequence[tuple[str, Mapping[str, float]]], autoscaled: bool) -> bool:
    hosts = {k for _, res in offers_now for k in res if k.startswith("node:") and k != "node:__internal_head__"}
    return len(hosts) > 1 or autoscaled


# -- the runner's entry point ------------------------------------------------------------

def preflight(*, address: str | None, storage: str | None, cpus_per_trial: float, gpus_per_trial: float,
              autoscaler_config: Mapping[str, Any] | None = None) -> None:
    """All checks that need the cluster; raise ConfigError with a one-line message.

    ``address`` and ``storage`` are checked first, without Ray. The resource check needs
    a connection: it runs against the cluster Ray is connected to (``ray.init`` done by
    the caller), or, when not yet connected and ``address`` names a cluster, connects
    with ``ray.init(address=...)`` itself and leaves the connection open for Tune.
    With no address and no connection (a local run), Ray would start with this machine's
    CPUs and GPUs, which are read directly.
    """
    import ray

    target = check_address(address)
    check_storage(storage)
    if not ray.is_initialized():
        if target is None:
            offers = [("this machine", {"CPU": float(os.cpu_count() or 1), "GPU": float(_local_gpus())})]
            check_resources(cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, offers=offers)
            return
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    now = node_offers(ray.nodes())
    config = autoscaler_config if autoscaler_config is not None else read_autoscaler_config()
    groups = _gcs_node_groups()
    later = node_type_offers(config) + groups
    check_resources(cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, offers=now + later)
    # Ray's fake multi-node provider starts its nodes on this machine (weaklab.tune.fake_cluster)
    provider = (config or {}).get("provider") or {}
    here = provider.get("type") == "fake_multinode" or provider.get("module") == "weaklab.tune.fake_cluster.SpotFakeProvider"
    elsewhere = bool(groups) or (bool(later) and not here)
    if _multi_host(now, elsewhere) and not _storage_is_shared(storage):
        what = ("--storage is not given, so Tune's state would go to a folder on this machine"
                if storage is None else f"--storage={storage!r} is a folder on this machine")
        raise ConfigError(f"{what}, but this cluster runs trials on other machines, which cannot write there; "
                          f"give --storage a URI every node can write (s3://bucket/prefix; on a `ray up` cluster "
                          f"\"$WEAKLAB_STORAGE\") or a folder on a shared NFS mount")


def _local_gpus() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() not in ("", "-1")])
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0
