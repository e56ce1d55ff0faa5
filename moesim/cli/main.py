"""``moesim`` command line. Each sub-command lives in its own module exposing ``register(subparsers)``.

A registered parser sets ``func=run`` where ``run(args) -> int``. What a command raises becomes one
line on stderr, never a traceback on the terminal:

- a ``MoesimInputError`` (bad input, a refused output path, a missing optional package): exit 2;
- an operating-system error (read-only or full disk, permission denied, a path through a file...):
  the path and the reason, exit 2;
- anything else is a bug: "internal error", exit 3, with the traceback kept in a log file
  (``$XDG_CACHE_HOME/moesim/logs/``, else ``~/.cache/moesim/logs/``, else the temp directory).

Exit code 1 stays what commands return themselves (e.g. a sweep with failed points).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

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
    "moesim.cli.validate_cmd",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: one line too, exit 2
        print(f"moesim: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="moesim", description="Simulate offloaded Mixture-of-Experts inference.")
    parser.add_argument("--version", action="version", version=f"moesim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for mod_name in COMMAND_MODULES:
        importlib.import_module(mod_name).register(sub)
    return parser


def _dispatch(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


def main(argv: list[str] | None = None) -> int:
    try:
        return _dispatch(argv)
    except MoesimInputError as exc:
        print(f"moesim: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("moesim: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"moesim: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug: one line here, the traceback in a log
        return internal_error(exc, argv)


EXIT_INTERNAL = 3


def _one_line(text: str) -> str:
    return " ".join(text.split())


def os_error_line(exc: OSError) -> str:
    """``PATH: reason`` for an operating-system error, with a hint for the usual causes."""
    from moesim.optional import missing_extra

    hint = missing_extra(exc)
    if hint:
        return hint
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    reason = exc.strerror or _one_line(str(exc)) or type(exc).__name__
    fixes = {
        errno.ENOSPC: "free some space or choose another output path",
        errno.EROFS: "the file system is read-only; choose another output path",
        errno.EACCES: "permission denied; choose a path you may write",
        errno.EPERM: "not permitted; choose a path you may write",
        errno.ENOTDIR: "a part of the path is a file, not a directory",
        errno.EISDIR: "it is a directory; give a file path",
        errno.ENOENT: "no such file or directory; check the path",
    }
    fix = fixes.get(exc.errno)
    where = " -> ".join(os.fsdecode(p) for p in paths)
    return _one_line(f"{where + ': ' if where else ''}{reason}" + (f" ({fix})" if fix else ""))


def log_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "moesim" / "logs"


def _write_log(text: str) -> Path | None:
    name = f"internal-error-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    for directory in (log_dir(), Path(tempfile.gettempdir())):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / name
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return None


def internal_error(exc: BaseException, argv: list[str] | None) -> int:
    from moesim.optional import missing_extra

    hint = missing_extra(exc)
    if hint:  # a ModuleNotFoundError of an optional package is the user's install, not a bug
        print(f"moesim: error: {hint}", file=sys.stderr)
        return 2
    cmdline = " ".join(sys.argv[:1] + list(sys.argv[1:] if argv is None else argv))
    text = f"moesim {__version__} internal error\ncommand: {cmdline}\npython: {sys.version}\n\n" + "".join(
        traceback.format_exception(type(exc), exc, exc.__traceback__)
    )
    log = _write_log(text)
    msg = _one_line(str(exc))[:300] or "no message"
    where = f"the log at {log}" if log else "the command you ran (the log could not be written)"
    print(
        f"moesim: internal error: {type(exc).__name__}: {msg}; please report it with {where}", file=sys.stderr
    )
    return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
