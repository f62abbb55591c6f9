"""The ``dejavu`` command: one subcommand per stage, each a thin layer over a function.

Each stage module exposes ``register(subparsers)``; this file only collects them,
so stages stay independent. Errors meant for users print as one line, without a
traceback: exit status 2 for usage errors (argparse's own, and
:class:`dejavu.UsageError`: bad ``--set`` keys or values, conflicting flags), 1 for
everything found at run time (:class:`dejavu.DejavuError`: missing or bad files,
mismatched artifacts, an existing result without ``--force``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dejavu import DejavuError, UsageError, __version__

# Stage modules, each with register(subparsers); a stage whose module is absent is skipped.
STAGES = [
    "dejavu.data.cli",
    "dejavu.partition",
    "dejavu.ffcv.cli",
    "dejavu.ssl.cli",
    "dejavu.attack.cli",
    "dejavu.audit.cli",
    "dejavu.analysis.cli",
    "dejavu.probe",
    "dejavu.report.cli",
    "dejavu.rcdm.cli",
    "dejavu.demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dejavu",
        description="Measure deja vu memorization in self-supervised vision models. "
        "Pipeline: data -> partition -> train -> attack -> analyze -> probe/plot/report. "
        "Start with `dejavu demo`.",
    )
    parser.add_argument("--version", action="version", version=f"dejavu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command as typed, for --launcher slurm resubmission
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except DejavuError as e:
        msg = str(e).strip()
        if "Original Traceback" in msg:  # raised in a DataLoader worker: torch adds its traceback
            msg = msg.splitlines()[-1].split("Error: ", 1)[-1]
        print(f"dejavu {args.command}: error: {msg}", file=sys.stderr)
        return 2 if isinstance(e, UsageError) else 1
    except OSError as e:  # the last net: a file error no stage turned into its own message
        where = f"{e.filename}: " if e.filename else ""
        print(f"dejavu {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
