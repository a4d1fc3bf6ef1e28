"""``weaklab studies | run | report | compare | reproduce``; ``python -m studies.NAME`` is ``weaklab run NAME``.

Every bad value ends the command with one line on stderr naming the parameter, the value
and what is allowed, exit status 2, before Ray starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, Sequence

from weaklab.registry import ConfigError


def field_docs(cls: type) -> dict[str, str]:
    """A dataclass's attribute docstrings (the string under each field), one line each."""
    import ast
    import inspect
    import textwrap

    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for field_node, doc in zip(body, body[1:]):
        if (isinstance(field_node, ast.AnnAssign) and isinstance(field_node.target, ast.Name)
                and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
                and isinstance(doc.value.value, str)):
            docs[field_node.target.id] = " ".join(doc.value.value.split())
    return docs


@dataclasses.dataclass(frozen=True)
class Option:
    """One command-line option generated from a dataclass field."""

    field: str
    """the dataclass field it sets"""
    flag: str
    """``--name`` (the field's name with dashes, or its ``flag`` metadata)"""
    metavar: str | None
    """what follows the flag (None: a switch)"""
    help: str
    """the field's docstring"""
    default: Any
    """the field's default"""
    kind: type
    """bool (a switch), tuple (repeatable), or the value's type"""


def options_of(cls: type) -> list[Option]:
    """The options of ``cls``'s fields, in field order; a field with ``metadata={"cli": False}``
    has none."""
    import typing

    hints, docs, out = typing.get_type_hints(cls), field_docs(cls), []
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli", True) is False:
            continue
        typ = hints[f.name]
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        kind = bool if typ is bool else tuple if typing.get_origin(typ) is tuple else (args[0] if args else typ)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        metavar = None if kind is bool else f.metadata.get("metavar", f.name.upper())
        out.append(Option(f.name, f.metadata.get("flag", "--" + f.name.replace("_", "-")), metavar,
                          docs.get(f.name, ""), default, kind))
    return out


#: ``weaklab run``'s own switch, beside the study's and the run's dataclass fields
NO_REPORT = Option("no_report", "--no-report", None, "do not write the report when the study ends", False, bool)


def run_options() -> list[Option]:
    """Every option of ``weaklab run`` (and ``python -m studies.NAME``), in help order."""
    from weaklab.tune.runner import RunOptions, StudyArgs

    return [*options_of(StudyArgs), *options_of(RunOptions), NO_REPORT]


def _add_run_options(p: argparse.ArgumentParser) -> None:
    for o in run_options():
        if o.kind is bool:
            p.add_argument(o.flag, dest=o.field, action="store_true", help=o.help)
        elif o.kind is tuple:
            p.add_argument(o.flag, dest=o.field, action="append", default=[], metavar=o.metavar, help=o.help)
        else:
            # the parser's default stays None: the dataclass fills it in, so it lives in one place
            shown = "" if o.default is None else f" (default: {o.default})"
            p.add_argument(o.flag, dest=o.field, type=o.kind, metavar=o.metavar, help=o.help + shown)


def options_table() -> str:
    """The README's table of ``weaklab run``'s options, from the same fields as the parser."""
    rows = ["| option | meaning | default |", "|---|---|---|"]
    for o in run_options():
        flag = o.flag if o.metavar is None else f"{o.flag} {o.metavar}"
        default = "-" if o.default is None or o.default is False or o.default == () else f"`{o.default}`"
        rows.append(f"| `{flag.replace('|', chr(92) + '|')}` | {o.help.replace('|', chr(92) + '|')} | {default} |")
    return "\n".join(rows)


def _run(args: argparse.Namespace) -> int:
    from weaklab.tune.runner import RunOptions, StudyArgs, prepare, run_study, run_until_decided, sequential_schedule

    def given(cls):
        return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                if getattr(args, f.name, None) is not None}

    opts = RunOptions(**given(RunOptions))
    chosen = StudyArgs(**{**given(StudyArgs), "sets": tuple(args.sets)})
    plan = prepare(args.study, **dataclasses.asdict(chosen))
    n = f"{plan.planned_trials(opts)} trials" if opts.search == "grid" else "an Optuna search, seeds as replicates"
    if opts.until_decided:
        looks = sequential_schedule(plan.study, opts)  # a design with nothing to add fails here, before Ray
        n += f", then seeds where claims are undecided (looks at {', '.join(map(str, looks))} seeds)"
    print(f"weaklab: study {plan.study.name} ({plan.study.reproduces}) on {plan.study.dataset}: {n}", flush=True)
    study_dir = (run_until_decided if opts.until_decided else run_study)(plan, options=opts)
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
    from weaklab.study import STUDIES, discover
    from weaklab.tune.runner import prepare

    discover()
    for name, s in STUDIES.items():
        n = prepare(name, build_data=False).planned_trials()  # the count `weaklab run` prints and runs
        print(f"{name:24s} {s.reproduces:34s} {n:4d} trials  {s.title}")
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


def _reproduce(args: argparse.Namespace) -> int:
    from analysis.reproduce import write_reproduce

    print(f"weaklab: wrote {write_reproduce(args.results, out=args.out)}", flush=True)
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
        rpr = sub.add_parser("reproduce", help="docs/REPRODUCE.md: every study's claims, date, commit, machine, wall time")
        rpr.add_argument("results", metavar="RESULTS", help="a results root (one folder per study) or one study folder")
        rpr.add_argument("--out", default="docs/REPRODUCE.md", help="the Markdown file (default docs/REPRODUCE.md)")
        rpr.set_defaults(fn=_reproduce)
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
