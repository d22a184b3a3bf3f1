"""The `parc` command line: a thin layer over parc.api."""

from __future__ import annotations

import argparse
import sys

from . import api
from .dsl.diagnostics import ParcError

COMMANDS = ("check",)


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
    return parser


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
        return {"check": _cmd_check}[args.command](args)
    except ParcError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
