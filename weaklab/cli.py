"""``weaklab studies | run | report | compare``; ``python -m studies.NAME`` is ``weaklab run NAME``.

Every bad value ends the command with one line on stderr naming the parameter, the value
and what is allowed, exit status 2, before Ray starts.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from weaklab.registry import ConfigError


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", help="dataset name (default: the study's; a paper dataset selects its preset)")
    p.add_argument("--data-root", help="folder holding torchvision-format dataset files")
    p.add_argument("--smoke", action="store_true", help="tiny version of the study (writes RESULTS/STUDY-smoke)")
    p.add_argument("--seeds", type=int, help="number of seeds (default: the study's)")
    p.add_argument("--results", default="results",
                   help="results root: a folder or a URI, s3://bucket/prefix, gs://..., file://... (default: results/)")
    p.add_argument("--address", help="join this Ray cluster ('auto' or host:port); default: start Ray locally")
    p.add_argument("--storage", default=os.environ.get("WEAKLAB_STORAGE") or None,
                   help="Tune experiment storage, a local path or a cloud URI (default $WEAKLAB_STORAGE, else RESULTS/_tune)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=0.0,
                   help="fraction in (0, 1] to pack trials on one GPU, or a whole number")
    p.add_argument("--search", default="grid", help="grid (every point) or optuna")
    p.add_argument("--num-samples", type=int,
                   help="configurations sampled by --search optuna, split evenly over the arms with searched "
                        "hyperparameters; each runs on every seed (default: as many as those arms' grid points)")
    p.add_argument("--sampler", default="tpe", help="Optuna sampler of --search optuna: tpe, random, cmaes or qmc")
    p.add_argument("--optuna-storage",
                   help="Optuna storage for optuna-dashboard: sqlite:///study.db or a journal file (default: in memory)")
    p.add_argument("--scheduler", default="none", help="none or asha (early-stop weak trials)")
    p.add_argument("--max-failures", type=int, default=1, help="retries of a failing trial from its checkpoint")
    p.add_argument("--max-concurrent", type=int, help="cap on trials running at once")
    p.add_argument("--checkpoint-every-s", type=float, default=5.0,
                   help="seconds between a trial's checkpoints (0: every epoch; the last epoch always saves)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted study (Tuner.restore)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a setting.*, hp.* or train.* value for the whole study (repeatable)")
    p.add_argument("--no-report", action="store_true", help="do not write the report when the study ends")


def _run(args: argparse.Namespace) -> int:
    from weaklab.tune.runner import RunOptions, prepare, run_study

    opts = RunOptions(results=args.results, storage=args.storage, address=args.address,
                      cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial, search=args.search,
                      num_samples=args.num_samples, sampler=args.sampler, optuna_storage=args.optuna_storage,
                      scheduler=args.scheduler, max_failures=args.max_failures,
                      max_concurrent=args.max_concurrent, checkpoint_every_s=args.checkpoint_every_s,
                      resume=args.resume)
    study, configs = prepare(args.study, smoke=args.smoke, dataset=args.dataset, data_root=args.data_root,
                             seeds=args.seeds, sets=args.sets, build_data=False)
    n = f"{len(configs)} trials" if args.search == "grid" else "an Optuna search, seeds as replicates"
    print(f"weaklab: study {study.name} ({study.reproduces}) on {study.dataset}: {n}", flush=True)
    study_dir = run_study(args.study, smoke=args.smoke, dataset=args.dataset, data_root=args.data_root,
                          seeds=args.seeds, sets=args.sets, options=opts)
    print(f"weaklab: Parquet in {study_dir}/trials and {study_dir}/epochs", flush=True)
    if not args.no_report:
        return _write_and_print_report(study_dir)
    return 0


def _write_and_print_report(study_dir: str, out: str | None = None, check: bool = False) -> int:
    """Write the report, print its claims table; with ``check``, 1 when a claim is reversed."""
    from analysis.claims import claims_terminal, read_claims
    from analysis.report import CLAIMS_CSV, write_report

    path = write_report(*_report_location(study_dir, out))
    claims = read_claims(os.path.join(os.path.dirname(path), CLAIMS_CSV))
    print(claims_terminal(claims), flush=True)
    print(f"weaklab: report in {path}", flush=True)
    reversed_ = int((claims["verdict"] == "reversed").sum()) if len(claims) else 0
    if check and reversed_:
        print(f"weaklab: --check: {reversed_} claim(s) reversed", file=sys.stderr)
        return 1
    return 0


def _studies(args: argparse.Namespace) -> int:
    from weaklab.study import STUDIES, discover, expand

    discover()
    for name, s in STUDIES.items():
        print(f"{name:24s} {s.reproduces:34s} {len(expand(s)):4d} trials  {s.title}")
    return 0


def _report_location(study_dir: str, out: str | None) -> tuple[str, str | None]:
    """(study_dir, out) for write_report: a file:// URI is its folder; the report of a study
    in a bucket is written to a local folder, reports/<study folder>, unless --out says."""
    if study_dir.startswith("file://"):
        study_dir = study_dir[len("file://"):]
    if "://" in study_dir and out is None:
        out = os.path.join("reports", study_dir.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1])
    return study_dir, out


def _report(args: argparse.Namespace) -> int:
    return _write_and_print_report(args.study_dir, out=args.out, check=args.check)


def _compare(args: argparse.Namespace) -> int:
    from analysis.robustness import write_compare

    print(write_compare(args.study_dirs, out=args.out))
    return 0


def main(argv: Sequence[str] | None = None, *, study: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog="weaklab" if study is None else f"python -m studies.{study}",
                                     description="Ray Tune studies of weakly-supervised learning methods")
    if study is None:
        sub = parser.add_subparsers(dest="command", required=True)
        sub.add_parser("studies", help="list the studies").set_defaults(fn=_studies)
        run = sub.add_parser("run", help="run a study through Ray Tune, writing Parquet")
        run.add_argument("study")
        _add_run_options(run)
        run.set_defaults(fn=_run)
        rep = sub.add_parser("report", help="figures and report.md from a study's Parquet")
        rep.add_argument("study_dir", help="a study's results folder or URI (s3://bucket/prefix/STUDY)")
        rep.add_argument("--out", help="output folder (default STUDY_DIR/report)")
        rep.add_argument("--check", action="store_true", help="exit 1 when any claim's verdict is 'reversed'")
        rep.set_defaults(fn=_report)
        cmp = sub.add_parser("compare", help="robustness, best score and cost of every method of several studies")
        cmp.add_argument("study_dirs", nargs="+", metavar="RESULTS/STUDY")
        cmp.add_argument("--out", help="output folder (default RESULTS/compare)")
        cmp.set_defaults(fn=_compare)
        args = parser.parse_args(argv)
    else:
        _add_run_options(parser)
        args = parser.parse_args(argv)
        args.study, args.fn = study, _run
    try:
        return args.fn(args)
    except (ConfigError, FileNotFoundError) as e:
        print(f"weaklab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("weaklab: interrupted; finished trials are in Parquet, continue with --resume", file=sys.stderr)
        return 130


def study_main(name: str) -> None:
    sys.exit(main(study=name))


if __name__ == "__main__":
    sys.exit(main())
