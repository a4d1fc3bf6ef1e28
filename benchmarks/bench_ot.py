"""Time per epoch spent in PLOT's OT pseudo-labelling: the batched solvers vs POT.

One "epoch" is solving every bag of a training set once, as ``plot`` does in each
end_epoch: exact OT (eq. 4; POT's ``ot.emd`` per bag vs ``weaklab.ot.ssp_batched``, all
bags at once) and entropic OT (eq. 7; POT's log-domain ``ot.sinkhorn`` per bag vs
``weaklab.ot.sinkhorn_batched``). The predictions are synthetic but shaped like a
stage-one model's: logits 2 N(0, 1) + 3 onehot(y), so the OT has work to do. POT's
entropic solve is slow, so it is timed on at most ``--pot-bags`` bags and scaled to the
epoch (marked ``extrapolated`` in the CSV). Also checks that both exact solvers give the
same labels on every bag timed.

    python -m benchmarks.bench_ot                          # digits-sized, CPU
    python -m benchmarks.bench_ot --n 45000 --device cuda  # CIFAR-10-sized, on a GPU
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time

import torch

from weaklab.ot import bag_counts, bag_layout, pot_plans, sinkhorn_batched, ssp_batched


def synthetic_epoch(n: int, K: int, bag_size: int, *, seed: int, device: str):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (n,), generator=g)
    bag = torch.arange(n) // bag_size
    B = int(bag.max()) + 1
    props = torch.zeros(B, K, dtype=torch.float64).index_put_((bag, y), torch.ones(n, dtype=torch.float64),
                                                              accumulate=True)
    props = (props / props.sum(1, keepdim=True)).float()
    logits = 2 * torch.randn(n, K, generator=g) + 3 * torch.nn.functional.one_hot(y, K)
    logp = torch.log_softmax(logits, 1)
    return logp.to(device), bag.to(device), props.to(device)


def _timed(fn, device: str, repeat: int) -> tuple[float, object]:
    out = fn()  # warm-up (and the result we check)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat, out


def bench(n: int, K: int, bag_sizes: list[int], *, lam: float, device: str, pot_bags: int, repeat: int,
          tol: float, max_iter: int) -> list[dict]:
    rows = []
    for bs in bag_sizes:
        logp, bag, props = synthetic_epoch(n, K, bs, seed=bs, device=device)
        lay = bag_layout(bag)
        lp = logp[lay.index]
        B = lay.num_bags
        counts = bag_counts(props, lay.sizes)
        sub = min(B, pot_bags)
        scale = B / sub
        cases = {
            ("exact", "pot"): (lambda: pot_plans(lp[:sub], lay.mask[:sub], props[:sub], lam=None), scale),
            ("exact", "batched"): (lambda: ssp_batched(-lp, lay.mask, counts), 1.0),
            ("entropic", "pot"): (lambda: pot_plans(lp[:sub], lay.mask[:sub], props[:sub], lam=lam,
                                                    max_iter=max_iter, tol=tol), scale),
            ("entropic", "batched"): (lambda: sinkhorn_batched(lp, lay.mask, props, lam=lam, max_iter=max_iter,
                                                               tol=tol), 1.0),
        }
        results = {}
        for (kind, solver), (fn, k) in cases.items():
            secs, out = _timed(fn, device, repeat if solver == "batched" or kind == "exact" else 1)
            results[(kind, solver)] = out
            rows.append({"n": n, "K": K, "bag_size": bs, "bags": B, "kind": kind, "solver": solver,
                         "device": device if solver == "batched" else "cpu", "lam": lam if kind == "entropic" else "",
                         "epoch_s": secs * k, "extrapolated": k != 1.0, "bags_timed": sub if k != 1.0 else B})
        pot_labels = results[("exact", "pot")].argmax(2)
        same = torch.equal(torch.where(lay.mask[:sub], pot_labels, -1).cpu(), results[("exact", "batched")][:sub].cpu())
        for r in rows[-4:]:
            r["exact_labels_equal"] = same
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1078, help="training instances (digits: 1078; CIFAR-10: 45000)")
    ap.add_argument("--k", type=int, default=10, help="classes")
    ap.add_argument("--bag-sizes", default="16,32,64,128")
    ap.add_argument("--lam", type=float, default=25.0, help="entropic lambda (weight 1/lambda), plot's default")
    ap.add_argument("--tol", type=float, default=1e-4, help="Sinkhorn stopping error, plot's default")
    ap.add_argument("--max-iter", type=int, default=1000, help="Sinkhorn iterations at most, plot's default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--pot-bags", type=int, default=64, help="bags timed with POT per case (then scaled)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--csv", default=os.path.join("benchmarks", "bench_ot.csv"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = bench(a.n, a.k, [int(b) for b in a.bag_sizes.split(",")], lam=a.lam, device=a.device,
                 pot_bags=a.pot_bags, repeat=a.repeat, tol=a.tol, max_iter=a.max_iter)
    for r in rows:
        r.update({"threads": a.threads, "host": platform.node(),
                  "gpu": torch.cuda.get_device_name() if a.device.startswith("cuda") else ""})
    print(f"{'bag':>5} {'bags':>5} {'kind':>9} {'solver':>8} {'device':>7} {'s/epoch':>10}  note")
    for r in rows:
        note = f"POT timed on {r['bags_timed']} bags, scaled" if r["extrapolated"] else ""
        if r["kind"] == "exact" and r["solver"] == "batched":
            note = "labels == POT" if r["exact_labels_equal"] else "LABELS DIFFER FROM POT"
        print(f"{r['bag_size']:>5} {r['bags']:>5} {r['kind']:>9} {r['solver']:>8} {r['device']:>7} "
              f"{r['epoch_s']:>10.4f}  {note}")
    os.makedirs(os.path.dirname(a.csv) or ".", exist_ok=True)
    with open(a.csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {a.csv}")


if __name__ == "__main__":
    main()
