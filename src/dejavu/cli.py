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
import difflib
import importlib
import re
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


class DejavuParser(argparse.ArgumentParser):
    """argparse without prefix matching (``--per-clas`` is not ``--per-class``), whose
    subcommands answer an unknown flag with their own usage and a hint: the closest flag
    ("did you mean --per-class?"), or the ``--set key=value`` form when the name is a setting
    of the stage's config without a flag of its own (``train --epochs 5`` -> ``--set epochs=5``).
    Every subparser is of this class (argparse gives subparsers their parent's class)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _SubcommandsAction)
        self.config_fields: tuple[str, ...] = ()  # set by dejavu.config.add_config_args

    def parse_known_args(self, args=None, namespace=None):
        self._argv = list(args) if args is not None else sys.argv[1:]
        if args is not None and "--print-config" in args and "--print-config" in self._option_string_actions:
            for a in self._actions:  # printing the settings needs no --out, --index, ...
                a.required = False
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            close = difflib.get_close_matches(m.group(1), re.findall(r"'([^']*)'", m.group(2)), n=1)
            message += f"; did you mean {close[0]!r}?" if close else ""
        if message.startswith("the following arguments are required") and self.config_fields:
            # a required flag missing hides the unknown ones: name them too (``train --epochs 5``)
            argv = getattr(self, "_argv", [])
            unknown = [
                (i, a)
                for i, a in enumerate(argv)
                if a.startswith("--") and a.partition("=")[0] not in self._option_string_actions
            ]
            for i, a in unknown:
                hint = self._hint(a, argv[i + 1 :])
                message += f"; unrecognized {a.partition('=')[0]}" + (f" ({hint})" if hint else "")
        super().error(message)

    def unrecognized(self, extras: list[str]) -> None:
        """Exit 2 with this parser's usage, naming the unknown arguments and a hint for each flag."""
        hints = [h for i, a in enumerate(extras) if a.startswith("--") for h in [self._hint(a, extras[i + 1 :])] if h]
        self.error(f"unrecognized arguments: {' '.join(extras)}" + "".join(f"; {h}" for h in hints))

    def _hint(self, arg: str, rest: list[str]) -> str:
        name, eq, value = arg.partition("=")
        if not eq and rest and not rest[0].startswith("-"):
            value = rest[0]
        key = name[2:].replace("-", "_")
        flags = [o for o in self._option_string_actions if o.startswith("--")]
        close = difflib.get_close_matches(name, flags, n=1)
        if key in self.config_fields:
            return f"{name} is a setting without a flag here: use --set {key}={value or '...'}"
        if close:
            return f"did you mean {close[0]}?"
        close = difflib.get_close_matches(key, self.config_fields, n=1)
        if close:
            return f"did you mean --set {close[0]}={value or '...'}?"
        return ""


class _SubcommandsAction(argparse._SubParsersAction):
    """Subcommands whose unknown arguments are reported by the subcommand's own parser (plain
    argparse hands them up to the top level, which answers with ``dejavu``'s usage)."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        extras = vars(namespace).pop(argparse._UNRECOGNIZED_ARGS_ATTR, None)
        sub = self._name_parser_map.get(values[0])
        if extras and isinstance(sub, DejavuParser):
            sub.unrecognized(extras)
        elif extras:
            setattr(namespace, argparse._UNRECOGNIZED_ARGS_ATTR, extras)


def build_parser() -> argparse.ArgumentParser:
    parser = DejavuParser(
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
    for leaf in _leaf_parsers(parser):
        leaf.set_defaults(prog=leaf.prog)  # "dejavu rcdm train: error: ..."
        if "--print-config" not in leaf._option_string_actions:  # a stage without a config dataclass
            leaf.add_argument("--print-config", action="store_true", help="print the parsed arguments as YAML and exit")
    return parser


def _leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    return [leaf for a in subs for p in dict.fromkeys(a.choices.values()) for leaf in _leaf_parsers(p)]


def _print_args(args: argparse.Namespace) -> None:
    import yaml

    skip = {"func", "command", "argv", "print_config", "prog"}
    print(yaml.safe_dump({k: v for k, v in vars(args).items() if k not in skip}, sort_keys=False).rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command as typed, for --launcher slurm resubmission
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "print_config", False) and not hasattr(args, "set"):  # no config: the arguments
        _print_args(args)
        return 0
    try:
        return int(args.func(args) or 0)
    except DejavuError as e:
        msg = str(e).strip()
        if "Original Traceback" in msg:  # raised in a DataLoader worker: torch adds its traceback
            msg = msg.splitlines()[-1].split("Error: ", 1)[-1]
        print(f"{getattr(args, 'prog', 'dejavu')}: error: {msg}", file=sys.stderr)
        return 2 if isinstance(e, UsageError) else 1
    except OSError as e:  # the last net: a file error no stage turned into its own message
        where = f"{e.filename}: " if e.filename else ""
        print(f"dejavu {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{getattr(args, 'prog', 'dejavu')}: interrupted; {interrupted_text(args)}", file=sys.stderr)
        return 130


# What an interrupted stage keeps (the file that must exist) and the flag that continues it.
_RESUME = {
    "dejavu train": ("last.pth", "the state after the last finished epoch, and the snapshots so far", "--resume"),
    "dejavu rcdm train": ("last.pth", "the state at the last snapshot step", "--resume"),
    "dejavu audit": ("classifier/last.pth", "the crop classifier after its last finished epoch", "--resume"),
}


def interrupted_text(args: argparse.Namespace) -> str:
    """What an interrupted command left (checked on disk) and the command that continues it."""
    import shlex
    from pathlib import Path

    argv = [a for a in getattr(args, "argv", []) if a != "--force"]  # --force would discard what was kept
    prog = getattr(args, "prog", "dejavu")
    out = Path(str(getattr(args, "out", None) or "."))

    def cmd(flag: str | None = None) -> str:
        return shlex.join(["dejavu", *argv, *([flag] if flag and flag not in argv else [])])

    if prog in _RESUME:
        rel, what, flag = _RESUME[prog]
        if (out / rel).is_file():
            return f"kept {out / rel} ({what}); continue with: {cmd(flag)}"
        return f"nothing to resume yet ({out / rel} not written); start again with: {cmd()}"
    if prog == "dejavu attack" and Path(str(getattr(args, "model_a", ""))).is_dir():
        done = sorted(d.name for d in out.glob("ep*") if (d / "results.json").is_file())
        kept = f"kept the finished snapshot pairs {', '.join(done)} in {out}" if done else "no snapshot pair finished"
        return f"{kept}; continue with: {cmd('--skip-existing')}"
    if prog == "dejavu attack":  # one pair: an unfinished folder (no results.json) is redone without --force
        return f"no result was written ({out / 'results.json'} comes last); rerun: {cmd()}"
    if prog == "dejavu demo":
        from dejavu.demo import DemoConfig

        demo_out = Path(str(getattr(args, "out", None) or DemoConfig().out))
        trained = sorted(str(f.parent.name) for f in demo_out.glob("train/*/last.pth"))
        if trained:
            return f"kept the training state of {', '.join(trained)} in {demo_out / 'train'}; continue with: {cmd()}"
        return f"no model trained yet; start again with: {cmd()}"
    if getattr(args, "out", None) and out.is_dir() and any(out.iterdir()):
        return f"{out} holds incomplete output; start again with: {cmd('--force')}"
    return f"no output was written; rerun: {cmd()}"


if __name__ == "__main__":
    sys.exit(main())
