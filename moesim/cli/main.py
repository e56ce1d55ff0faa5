"""``moesim`` command line. Each sub-command lives in its own module exposing ``register(subparsers)``.

A registered parser sets ``func=run`` where ``run(args) -> int``. Any ``MoesimInputError`` raised below
becomes one line on stderr and exit code 2, with nothing written.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from moesim import __version__
from moesim.errors import MoesimInputError

# Sub-command modules, imported lazily so ``moesim --help`` stays fast.
COMMAND_MODULES = [
    "moesim.cli.run_cmd",
    "moesim.cli.trace_cmd",
    "moesim.cli.sweep_cmd",
    "moesim.cli.compare_cmd",
    "moesim.cli.report_cmd",
    "moesim.cli.capture_cmd",
    "moesim.cli.profile_cmd",
    "moesim.cli.harness_cmd",
    "moesim.cli.calibrate_cmd",
    "moesim.cli.predictor_cmd",
    "moesim.cli.list_cmd",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors also exit 2 with one line + usage
        self.print_usage(sys.stderr)
        print(f"moesim: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="moesim", description="Simulate offloaded Mixture-of-Experts inference.")
    parser.add_argument("--version", action="version", version=f"moesim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for mod_name in COMMAND_MODULES:
        importlib.import_module(mod_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except MoesimInputError as exc:
        print(f"moesim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("moesim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
