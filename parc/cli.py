"""The `parc` command line: a thin layer over parc.api."""

from __future__ import annotations

import argparse
import json
import sys

from . import api
from .dsl.diagnostics import ParcError

COMMANDS = ("check", "ir")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parc", description="A declarative pipeline compiler "
                                     "for distributed training.")
    parser.add_argument("--version", action="version", version=f"parc {api.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = sub.add_parser("check", help="check .par files and report every error")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    check.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                       help="override a model parameter")
    ir = sub.add_parser("ir", help="print the dataflow IR after any pass")
    ir.add_argument("file", metavar="FILE", help="a .par spec, or a .ir file printed by parc")
    ir.add_argument("--after", choices=api.PASS_NAMES, default=api.PASS_NAMES[-1],
                    help="stop after this pass (default: the last)")
    ir.add_argument("--run", default=None, metavar="PASS,...",
                    help="for a .ir file: the passes to run on it")
    ir.add_argument("--json", action="store_true", help="the JSON form")
    ir.add_argument("--scope", metavar="GLOB", help="only ops in scopes matching GLOB")
    ir.add_argument("--summary", action="store_true",
                    help="a table of ops, parameters, FLOPs and communication per layer")
    ir.add_argument("--verify", action="store_true", help="verify the IR after every pass")
    ir.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override a model parameter")
    return parser


def _cmd_ir(args) -> int:
    graph = api.ir(args.file, after=args.after, run=args.run, verify=args.verify,
                   overrides=api.parse_overrides(args.set))
    if args.json:
        print(json.dumps(api.graph_to_json(graph), indent=1))
        return 0
    out = api.console(sys.stdout)
    if args.summary:
        out.print(api.summary_table(graph))
    else:
        api.show_graph(graph, out, args.scope)
    return 0


def _cmd_check(args) -> int:
    status = 0
    overrides = api.parse_overrides(args.set)
    for path in args.files:
        try:
            spec = api.check(path, overrides)
        except ParcError as exc:
            print(exc.render(), file=sys.stderr)
            status = 1
            continue
        if not args.quiet:
            print(f"{spec.file}: ok{api.summary(spec)}")
    return status


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"check": _cmd_check, "ir": _cmd_ir}[args.command](args)
    except ParcError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `parc ir ... | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
