"""Dataclass configurations from YAML files and ``--set key=value`` overrides.

``load_config(TrainConfig, "vicreg.yaml", ["epochs=100", "lr=0.3"])`` reads the
file, applies the overrides (parsed as YAML scalars, then coerced to the field's
type), and rejects unknown keys with the list of valid ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from dejavu import DejavuError, UsageError

C = TypeVar("C")


def _coerce(cls_name: str, name: str, tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(cls_name, name, args[0], value)
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        elif not isinstance(value, (list, tuple)):  # a YAML scalar: a list of one
            value = [value]
        return origin(_coerce(cls_name, name, inner, v) for v in value)
    try:
        if tp is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if tp in (int, float, str):
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return tp(value)
    except (TypeError, ValueError):
        raise UsageError(f"{cls_name}.{name}: expected {getattr(tp, '__name__', tp)}, got {value!r}") from None
    return value


def from_dict(cls: type[C], d: dict[str, Any], source: str = "config", where: dict[str, str] | None = None) -> C:
    """Build and validate a config dataclass from a flat mapping.

    Args:
        cls: the config dataclass.
        d: ``{field: value}``; values are coerced to the field's type (``"3"`` -> 3,
            ``"off"`` -> False, ...); missing fields keep their defaults.
        source: where ``d`` came from, named in errors.
        where: where single keys came from when that is not ``source`` (``{"knn": "--set"}``).

    Returns:
        ``cls(**d)`` after its ``validate()`` (when it has one).

    Raises:
        UsageError: an unknown key, a value of the wrong type or not among the field's
            ``metadata["choices"]``, or a value ``validate()`` rejects (a :class:`DejavuError` it raises is re-raised as a usage error).
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    _known(d, set(fields), source)
    kw = {k: _coerce(cls.__name__, k, hints[k], v) for k, v in d.items()}
    for k, v in kw.items():
        _check_choice(fields[k], v, (where or {}).get(k, source))
    obj = cls(**kw)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except UsageError:
            raise
        except DejavuError as e:  # an invalid value is a usage error, whoever checks it
            raise UsageError(str(e)) from None
    return obj


def check_choices(obj: Any) -> None:
    """Every field of the dataclass instance ``obj`` among its allowed values (``metadata["choices"]``):
    what a config's ``validate()`` calls for library callers, who build the dataclass directly.

    Raises:
        UsageError: one line naming the key, the value and the choices.
    """
    for f in dataclasses.fields(obj):
        _check_choice(f, getattr(obj, f.name), "")


def _check_choice(f: dataclasses.Field, value: Any, source: str) -> None:
    """The one check of a field's allowed values (``metadata["choices"]``), whether the value came
    from a flag, a file, ``--set`` or the library; a usage error naming the source (when known), the
    key and the choices."""
    choices = f.metadata.get("choices")
    if choices and value not in choices and not (value is None and f.default is None):  # None: "not set"
        where = f"{source}: " if source else ""
        raise UsageError(f"{where}{f.name}={value!r}: choose from {', '.join(map(str, choices))}")


def parse_sets(sets: list[str] | None) -> dict[str, Any]:
    """``["k=v", "a.b=1"]`` -> ``{"k": v, "a": {"b": 1}}`` (values parsed as YAML scalars;
    dotted keys give nested mappings, for settings owned by a method or a part)."""
    out: dict[str, Any] = {}
    for s in sets or []:
        if "=" not in s:
            raise UsageError(f"--set {s!r}: expected key=value")
        k, v = s.split("=", 1)
        *parents, leaf = [p.strip().replace("-", "_") for p in k.split(".")]
        try:
            value = safe_yaml(v, f"--set {k}") if v.strip() else ""
        except yaml.YAMLError:
            value = v
        merge_into(out, _nest(parents, {leaf: value}))
    return out


def _nest(parents: list[str], d: dict[str, Any]) -> dict[str, Any]:
    for p in reversed(parents):
        d = {p: d}
    return d


def merge_into(dst: dict[str, Any], src: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``src`` into ``dst`` (nested mappings merged key by key).

    Args:
        dst: the mapping updated in place.
        src: the mapping merged in (its values win, except where both hold a mapping).

    Returns:
        ``dst``.
    """
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            merge_into(dst[k], v)
        else:
            dst[k] = v
    return dst


def safe_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load(text)``, refusing aliases (``*name``): a config never needs them, and
    a few hundred bytes of nested aliases expand into an exponentially large value (an
    "alias bomb": 80 MB in the error message that quoted it).

    Args:
        text: the YAML.
        source: where it came from, named in the error.

    Returns:
        The loaded value.

    Raises:
        UsageError: the text uses an alias.
        yaml.YAMLError: the text is not valid YAML.
    """
    if "*" in text and any(isinstance(ev, yaml.AliasEvent) for ev in yaml.parse(text, Loader=yaml.SafeLoader)):
        raise UsageError(f"{source}: YAML aliases (*name) are not allowed in a config")
    return yaml.safe_load(text)


def read_yaml(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's mapping; a missing or malformed file is a run-time error (exit 1).

    A file may start from another: ``_base_: FILE`` (relative to the file's folder) reads that
    file first and merges this one's keys over it (one default plus short overrides).
    """
    path = Path(path)
    if not path.is_file():
        raise DejavuError(f"{path}: config file not found")
    try:
        d = safe_yaml(path.read_text(), str(path)) or {}
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a UTF-8 text file") from None
    except yaml.YAMLError as e:
        raise DejavuError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(d, dict):
        raise DejavuError(f"{path}: expected a mapping of key: value")
    if "_base_" not in d:
        return d
    base = d.pop("_base_")
    if not isinstance(base, str) or path.resolve() in _seen:
        raise DejavuError(f"{path}: _base_ must name another config file, got {base!r}")
    return merge_into(read_yaml(path.parent / base, (*_seen, path.resolve())), d)


def load_config(
    cls: type[C],
    path: str | os.PathLike | None = None,
    sets: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> C:
    """The one way every stage builds its settings: defaults < ``base`` < YAML file < ``--set``.

    Args:
        cls: the stage's config dataclass.
        path: a YAML file (``--config``), or None.
        sets: ``key=value`` strings (``--set``), values parsed as YAML scalars.
        base: defaults that differ from the dataclass's (e.g. a preset).

    Returns:
        The validated config. Unknown keys are reported against where they came from (the
        file or ``--set``), with the valid keys listed; bad values as ``Class.key: ...``.
    """
    d: dict[str, Any] = dict(base or {})
    valid = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    where: dict[str, str] = {}
    if path is not None:
        _read_into(d, where, _known(_normalized(cls, read_yaml(path), str(path)), valid, str(path)), str(path))
    _read_into(d, where, _known(_normalized(cls, parse_sets(sets), "--set"), valid, "--set"), "--set")
    return from_dict(cls, d, source=str(path) if path else "--set", where=where)


def _read_into(d: dict[str, Any], where: dict[str, str], new: dict[str, Any], source: str) -> None:
    """Put ``new`` (read from ``source``) into ``d``: a file's keys replace, ``--set``'s merge into
    nested sections; each key's source is recorded in ``where`` (named in errors)."""
    if source == "--set":
        merge_into(d, new)
    else:
        d.update(new)
    where.update(dict.fromkeys(new, source))


def _normalized(cls: type, d: dict[str, Any], source: str) -> dict[str, Any]:
    """``cls.normalize_keys(d, source)`` where the config class defines it (e.g. TrainConfig maps
    a method's nested keys, ``vicreg: {sim: 30}``, onto its flat fields), else ``d``."""
    hook = getattr(cls, "normalize_keys", None)
    return hook(d, source) if callable(hook) else d


def _known(d: dict[str, Any], valid: set[str], source: str) -> dict[str, Any]:
    """``d``, or a usage error naming its unknown keys, the closest valid key of each, and all valid keys."""
    unknown = sorted(set(d) - valid)
    if unknown:
        close = {k: c[0] for k in unknown for c in [difflib.get_close_matches(k, sorted(valid), n=1)] if c}
        hint = ", ".join(close.values() if len(unknown) == 1 else (f"{c} for {k}" for k, c in close.items()))
        raise UsageError(
            f"{source}: unknown key(s) {', '.join(unknown)}"
            + (f" (did you mean {hint}?)" if hint else "")
            + f"; valid keys: {', '.join(sorted(valid))}"
        )
    return d


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def packaged_config(*parts: str) -> Path:
    """Path of a config file shipped in ``dejavu/configs``."""
    return Path(__file__).parent / "configs" / Path(*parts)


def resolve_config(name: str | os.PathLike | None, kind: str, also: tuple[str, ...] = ()) -> Path | None:
    """``--config`` value -> a YAML path: an existing file, or a config packaged in
    ``dejavu/configs/<kind>/<name>.yaml`` (e.g. ``vicreg``, ``paper128``).

    Args:
        name: a file path, a packaged config name, or None.
        kind: the packaged-config folder (e.g. ``train``, ``attack``).
        also: names the caller resolves without a file (listed in the error, as packaged names).

    Returns:
        The YAML path (not checked to exist when it ends in ``.yaml``/``.yml``), or None for
        None.

    Raises:
        DejavuError: ``name`` is neither a file nor a packaged config (a missing file: exit 1; the
            packaged names listed).
    """
    if name is None:
        return None
    path = Path(name)
    if path.is_file() or path.suffix in (".yaml", ".yml"):
        return path
    cand = packaged_config(kind, f"{name}.yaml")
    if cand.is_file():
        return cand
    names = sorted({p.stem for p in packaged_config(kind).glob("*.yaml")} | set(also))
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise DejavuError(
        f"--config {name}: neither a file nor a packaged {kind} config ({hint}packaged: {', '.join(names)})"
    )


def field_help(cls: type, name: str) -> str:
    """Help text of a config field (its ``metadata['help']``), with its default."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    if f.metadata.get("required"):
        return f"{f.metadata.get('help', '')} (required: the flag, --config or --set)".strip()
    default = (
        f.default
        if f.default is not dataclasses.MISSING
        else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
    )
    return f"{f.metadata.get('help', '')} (default: {default})".strip()


def add_config_args(
    parser: Any, cls: type, flags: tuple[str, ...] = (), kind: str | None = None, title: str = "configuration"
) -> None:
    """Add ``--config``, ``--set`` and one ``--flag`` per listed field of ``cls``.

    The flags' types, choices, help and defaults all come from the dataclass (field
    ``metadata`` ``help`` / ``choices``), so no default is defined twice; a flag that is
    not given does not override the config file. Read them back with :func:`config_from_args`.

    Args:
        parser: an argparse parser (or subparser).
        cls: the stage's config dataclass.
        flags: field names that get their own ``--flag`` (underscores become dashes).
        kind: the packaged-config folder named in ``--config``'s help, or None.
        title: the argument group's title.
    """
    import argparse

    g = parser.add_argument_group(title)
    packaged = f" or a packaged {kind} config name" if kind else ""
    g.add_argument("--config", metavar="FILE|NAME", default=None, help=f"YAML config file{packaged}")
    g.add_argument(
        "--set",
        dest="set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override any {cls.__name__} key (repeatable; nested keys as a.b=value)",
    )
    g.add_argument(
        "--print-config",
        action="store_true",
        help=f"print the resolved {cls.__name__} (defaults < --config < flags < --set) as YAML, "
        "usable as a --config file, and exit",
    )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    parser.config_fields = tuple(fields)  # for the CLI's hints: `--epochs 5` -> `--set epochs=5`
    for name in flags:
        f, tp = fields[name], hints[name]
        kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": field_help(cls, name)}
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["metavar"] = name.upper()
            inner = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]  # X | None -> X
            if typing.get_origin(tp) in (list, tuple):  # "1,2,3": split and coerced by from_dict
                inner = [str]
            if inner[0] in (int, float, str):
                kw["type"] = inner[0]
            if f.metadata.get("choices"):  # shown here, checked by from_dict as a file's or --set's value
                kw["metavar"] = "{" + ",".join(map(str, f.metadata["choices"])) + "}"
        g.add_argument("--" + name.replace("_", "-"), *f.metadata.get("aliases", ()), **kw)


def config_from_args(
    cls: type[C], args: Any, flags: tuple[str, ...] = (), kind: str | None = None, base: dict[str, Any] | None = None
) -> C:
    """Build a stage's config: dataclass defaults < ``base`` < ``--config`` < flags < ``--set``.

    Args:
        cls: the stage's config dataclass.
        args: the parsed argparse namespace (from :func:`add_config_args`).
        flags: the field names registered as flags.
        kind: the packaged-config folder for ``--config NAME``.
        base: defaults that differ from the dataclass's.

    Returns:
        The validated config; unknown keys and bad values raise :class:`dejavu.UsageError`.
    """
    valid = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    d: dict[str, Any] = dict(base or {})
    where: dict[str, str] = {}
    path = resolve_config(getattr(args, "config", None), kind) if kind else getattr(args, "config", None)
    if path is not None:
        _read_into(d, where, _known(_normalized(cls, read_yaml(path), str(path)), valid, str(path)), str(path))
    for k in flags:
        if hasattr(args, k):
            d[k], where[k] = getattr(args, k), "--" + k.replace("_", "-")
    _read_into(
        d, where, _known(_normalized(cls, parse_sets(getattr(args, "set", None)), "--set"), valid, "--set"), "--set"
    )
    if not getattr(args, "print_config", False):
        _check_required(cls, d)
    cfg = from_dict(cls, d, source=str(path) if path else "command line", where=where)
    if getattr(args, "print_config", False):
        print_config(cfg)
        raise SystemExit(0)
    return cfg


def print_config(cfg: Any) -> None:
    """Print a config as YAML that ``--config`` reads back (what ``--print-config`` shows)."""
    import json

    plain = json.loads(json.dumps(to_dict(cfg), default=str))  # tuples -> lists, for safe_dump
    print(f"# {type(cfg).__name__}")
    print(yaml.safe_dump(plain, sort_keys=False).rstrip())


def _check_required(cls: type, d: dict[str, Any]) -> None:
    """Fields with ``metadata["required"]`` (e.g. ``npc``, which picks the split's files) must be
    given by the user, from the flag, the ``--config`` file or ``--set``: their dataclass default
    exists only for the library API."""
    for f in dataclasses.fields(cls):
        if f.metadata.get("required") and d.get(f.name) is None:
            flag = "--" + f.name.replace("_", "-")
            raise UsageError(f"{flag} is required (or {f.name}: in the --config file, or --set {f.name}=...)")
