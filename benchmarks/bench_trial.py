"""What one trial of each study costs in a Tune worker process, at this tree and at a
reference revision, measured in one run so the ratios share the machine's load.

    python benchmarks/bench_trial.py --ref 2aaedaf            # every study, this tree vs 2aaedaf
    python benchmarks/bench_trial.py --studies tau-sweep      # this tree only

Per study, its first trial (first arm, first grid point, seed 0, the full recipe, not
``--smoke``) runs twice in a fresh Python process with one torch thread, as in a Ray
worker (Ray sets ``OMP_NUM_THREADS=1`` for a 1-CPU actor): the first run is what the first
trial in a new worker costs, the second what every later trial of a reused worker
(``reuse_actors``) costs. The process imports what a worker imports (torch, the engine,
Ray's trainable module when Ray is installed) and checkpoints as the trainable does (every
``--checkpoint-every-s`` seconds and at the end, into a temporary folder). Columns:

- ``import_cpu_s``: process CPU of the imports a worker does before its first trial;
- ``first_cpu_s`` / ``steady_cpu_s``: process CPU (user + system) of the first / second run
  of the trial (dataset load, weak data from the cache, optimizer, every epoch, checkpoints);
- ``train_cpu_s``: the engine's own ``epoch_cpu_s`` summed over the second run's epochs, and
  its wall split: ``steps_s`` (forward, loss, backward, step), ``method_s`` (the method's
  per-epoch update: GMM fit, OT solve, pseudo labels) and ``eval_s`` (the evaluation passes);
- ``peak_rss_mb``: the process's peak resident set (``VmHWM``) after both runs;
- ``dynamo``: whether ``torch._dynamo`` got imported (it is only needed for ``train.compile``);
- ``same``: whether the two revisions' histories are identical (md5 of the metrics).

The weak data are made once (untimed) before the timed runs, in the shared cache
``$WEAKLAB_CACHE`` (default a folder under the system's temp dir), so both revisions read
the same files. A reference revision is checked out with ``git worktree`` under the temp dir.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import emit  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: the child: one study's first trial, twice, in this process; prints one JSON line
CHILD = r"""
import hashlib, json, math, os, resource, sys, tempfile, time
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
c0 = cpu()
import torch
torch.set_num_threads(1)
from weaklab.engine import build_trial, train
try:
    import weaklab.tune.trainable  # noqa: F401  (Ray's modules: what a worker holds)
except ImportError:
    pass
from weaklab.study import STUDIES, discover, expand, resolve
import_cpu = cpu() - c0
name, every_s, warm = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "warm"
discover()
cfg = expand(resolve(STUDIES.get(name)), seeds=[0])[0]
if warm:
    build_trial(cfg)
    print(json.dumps({"warm": True}))
    sys.exit(0)
out = {"import_cpu_s": import_cpu}
for run in ("first", "steady"):
    c = cpu()
    t, weak, method = build_trial(cfg)
    last = [time.perf_counter()]
    with tempfile.TemporaryDirectory() as d:
        def on_epoch(history, save, is_last):
            if is_last or time.perf_counter() - last[0] >= every_s:
                save(os.path.join(d, f"checkpoint_{len(history):06d}"))
                last[0] = time.perf_counter()
        res = train(data=weak, method=method, config=t.train, seed=t.seed, on_epoch=on_epoch)
    out[f"{run}_cpu_s"] = cpu() - c
    out["epochs"] = len(res.history)
    out["train_cpu_s"] = sum(h["epoch_cpu_s"] for h in res.history)
    # wall shares of the epochs (one thread, so ~CPU on an idle core): steps, method updates, the rest is evaluation
    out["steps_s"] = sum(h["train_s"] for h in res.history)
    out["method_s"] = sum(h["method_s"] for h in res.history)
    out["eval_s"] = sum(h["epoch_s"] - h["train_s"] - h["method_s"] for h in res.history)
    keep = sorted(k for k in res.history[-1] if not k.endswith("_s") and k != "lr")
    out["md5"] = hashlib.md5(json.dumps([[h.get(k) for k in keep] for h in res.history], default=str).encode()).hexdigest()
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        out["peak_rss_mb"] = int(line.split()[1]) / 1024
out["dynamo"] = "torch._dynamo" in sys.modules
print(json.dumps(out))
"""


def worktree(rev: str) -> str:
    path = os.path.join(tempfile.gettempdir(), f"weaklab-bench-{rev}")
    if not os.path.isdir(path):
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", path, rev], check=True,
                       stdout=subprocess.DEVNULL)
    return path


def child(tree: str, study: str, every_s: float, warm: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, study, str(every_s), "warm" if warm else "timed"],
                          cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{study} at {tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", default="", help="comma-separated study names (default: every study)")
    ap.add_argument("--ref", default="", help="a git revision measured beside this tree (e.g. 2aaedaf)")
    ap.add_argument("--checkpoint-every-s", type=float, default=5.0, help="the runner's default interval")
    args = ap.parse_args(argv)
    os.environ.setdefault("WEAKLAB_CACHE", os.path.join(tempfile.gettempdir(), "weaklab-bench-cache"))
    from weaklab.study import STUDIES, discover

    discover()
    studies = [s for s in args.studies.split(",") if s] or list(STUDIES.names())
    trees = [("head", ROOT)] + ([(args.ref, worktree(args.ref))] if args.ref else [])
    rows = []
    for study in studies:
        child(ROOT, study, args.checkpoint_every_s, warm=True)
        got = {}
        for label, tree in trees[::-1]:  # the reference first, then this tree, back to back
            load = os.getloadavg()[0]
            got[label] = r = child(tree, study, args.checkpoint_every_s, warm=False)
            rows.append({"study": study, "tree": label, "epochs": r["epochs"], "import_cpu_s": r["import_cpu_s"],
                         "first_cpu_s": r["first_cpu_s"], "steady_cpu_s": r["steady_cpu_s"],
                         "train_cpu_s": r["train_cpu_s"], "steps_s": r["steps_s"], "method_s": r["method_s"],
                         "eval_s": r["eval_s"], "peak_rss_mb": r["peak_rss_mb"], "dynamo": r["dynamo"],
                         "load1": round(load, 2)})
        if args.ref:
            ref, head = got[args.ref], got["head"]
            rows[-1].update({"first_ratio": head["first_cpu_s"] / ref["first_cpu_s"],
                             "steady_ratio": head["steady_cpu_s"] / ref["steady_cpu_s"],
                             "rss_ratio": head["peak_rss_mb"] / ref["peak_rss_mb"], "same": head["md5"] == ref["md5"]})
        print(json.dumps(rows[-1]), flush=True)
    emit("bench_trial", rows)


if __name__ == "__main__":
    main()
