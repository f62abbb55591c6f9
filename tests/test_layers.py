"""The package's layering (docs/DESIGN.md, "Layers"), read from the code: every import of
a dejavu module, at module level or inside a function, goes to the same layer or a lower
one, and no two modules import each other (directly or around a circle)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# The one table: lowest layer first. A module belongs to the layer of its longest listed
# prefix; every stage's ``<package>.cli`` is an entry point (the top layer).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "core",
        (
            "dejavu",
            "dejavu.formats",
            "dejavu.io",
            "dejavu.units",
            "dejavu.utils",
            "dejavu.device",
            "dejavu.config",
            "dejavu.train_step",
            "dejavu.launch",
        ),
    ),
    ("inputs", ("dejavu.data", "dejavu.partition", "dejavu.analysis")),
    ("ssl", ("dejavu.ssl",)),
    ("attack", ("dejavu.attack",)),
    ("audit", ("dejavu.audit",)),
    ("consumers", ("dejavu.probe", "dejavu.rcdm", "dejavu.report", "dejavu.monitor", "dejavu.api")),
    ("entry", ("dejavu.cli", "dejavu.__main__", "dejavu.ffcv", "dejavu.demo")),
)

# Known upward imports (importer, imported), each with why it is still there. Empty is the goal;
# a new entry needs a reason. (The optional FFCV sources and the monitor's hooks are built by the
# stage CLIs and passed in: attack(crop_datasets=...), train(images=..., epoch_hooks=...).)
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}
# Known circles (as sorted module tuples), each with why it is still there.
ALLOWED_CIRCLES: dict[tuple[str, ...], str] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "dejavu").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def layer_of(module: str) -> int:
    if module.rpartition(".")[2] == "cli" and module != "dejavu.cli":
        return len(LAYERS) - 1
    best, rank = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    assert rank >= 0, f"{module} is in no layer: add it to LAYERS (and docs/DESIGN.md)"
    return rank


def _resolve(name: str) -> str:
    """The dejavu module an imported name lives in (a submodule, or the package)."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imports(module: str) -> Iterator[tuple[str, int, str]]:
    """(imported module, line, when) for each dejavu import in ``module``; ``when`` is "load"
    (at import time), "call" (inside a function) or "typing" (under TYPE_CHECKING: never runs)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def walk(node: ast.AST, when: str) -> Iterator[tuple[str, int, str]]:
        for child in ast.iter_child_nodes(node):
            now = when
            if _is_type_checking(child):
                now = "typing"
            elif when == "load" and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                now = "call"
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "dejavu":
                        yield _resolve(alias.name), child.lineno, now
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(up + ([base] if base else []))
                if base.split(".")[0] == "dejavu":
                    for alias in child.names:
                        yield _resolve(f"{base}.{alias.name}"), child.lineno, now
            yield from walk(child, now)

    yield from walk(ast.parse(path.read_text(), str(path)), "load")


def _graph() -> dict[str, set[str]]:
    """Every import that runs (at load or in a call); TYPE_CHECKING imports never run."""
    return {m: {t for t, _, when in _imports(m) if t != m and when != "typing"} for m in MODULES}


def _circles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[tuple[str, ...]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(tuple(sorted(comp)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    for m in MODULES:
        layer_of(m)


def test_no_import_goes_up_a_layer():
    bad = []
    for m in MODULES:
        for target, line, when in _imports(m):
            if (m, target) in ALLOWED_UPWARD:
                assert when == "call", f"{m} -> {target}: an allowed upward import stays inside its function"
            elif layer_of(target) > layer_of(m):
                name = LAYERS[layer_of(m)][0], LAYERS[layer_of(target)][0]
                bad.append(f"{MODULES[m].relative_to(SRC)}:{line}: {m} ({name[0]}) -> {target} ({name[1]})")
    assert not bad, "imports from a lower layer to a higher one:\n" + "\n".join(bad)


def test_no_circles_between_modules():
    """Over every import that runs: function-local ones too, not those under TYPE_CHECKING."""
    circles = [c for c in _circles(_graph()) if c not in ALLOWED_CIRCLES]
    assert not circles, "modules importing each other:\n" + "\n".join(map(str, circles))


def test_the_allowed_lists_hold_no_stale_entries():
    graph = _graph()
    stale = [pair for pair in ALLOWED_UPWARD if pair[1] not in graph.get(pair[0], ())]
    circles = set(_circles(graph))
    stale += [c for c in ALLOWED_CIRCLES if c not in circles]
    assert not stale, stale


def test_the_checker_sees_a_function_local_upward_import_and_a_circle():
    tree = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(tree) == [("a", "b", "c")]
    assert layer_of("dejavu.ssl.train") < layer_of("dejavu.ffcv.loader")
    assert layer_of("dejavu.attack.cli") == len(LAYERS) - 1
    imports = list(_imports("dejavu.cli"))
    assert {"load", "call"} <= {when for _, _, when in imports}, "function-local imports are read"
    assert "typing" in {when for _, _, when in _imports("dejavu.ssl.registry")}


# Function-local imports of dejavu modules outside the entry layer (stage CLIs, dejavu.cli, the
# demo, ffcv), each with why it is not at the module's top. Importing a module of this package
# loads nothing heavy unless the module needs it, so a local import is for torch alone: where
# the importer is read by `dejavu --help` (tests/test_cli_ux.py) or must not load torch itself.
TORCH_FOR_HELP = "loads torch; the importer is read by `dejavu --help` (tests/test_cli_ux.py)"
ALLOWED_LOCAL: dict[tuple[str, str], str] = {
    ("dejavu.probe", "dejavu.attack.dist"): TORCH_FOR_HELP,
    ("dejavu.probe", "dejavu.ssl.checkpoint"): TORCH_FOR_HELP,
    ("dejavu.rcdm.reconstruct", "dejavu.rcdm.model"): TORCH_FOR_HELP + " (rcdm.cli: ReconstructConfig)",
    ("dejavu.rcdm.reconstruct", "dejavu.rcdm.sample"): TORCH_FOR_HELP + " (rcdm.cli: ReconstructConfig)",
    ("dejavu.rcdm.reconstruct", "dejavu.ssl.checkpoint"): TORCH_FOR_HELP + " (rcdm.cli: ReconstructConfig)",
    ("dejavu.ssl.config", "dejavu.ssl.backbones"): TORCH_FOR_HELP + " (ssl.cli: TrainConfig's flags)",
    ("dejavu.ssl.config", "dejavu.ssl.heads"): TORCH_FOR_HELP + " (ssl.cli: TrainConfig's flags)",
    ("dejavu.report.plots", "dejavu.monitor.plot"): "the monitor package loads torch; a report's plots need none",
    ("dejavu.monitor", "dejavu.monitor.lightning"): "pytorch_lightning (optional) loads on first use of the callback",
}


def _local_imports() -> dict[tuple[str, str], int]:
    """(importer, imported) -> line, for each function-local dejavu import outside the entry layer;
    an allowed upward import (ALLOWED_UPWARD) must be local, so it is not counted here."""
    out: dict[tuple[str, str], int] = {}
    for m in MODULES:
        if layer_of(m) < len(LAYERS) - 1:
            for target, line, when in _imports(m):
                if when == "call" and target != m and (m, target) not in ALLOWED_UPWARD:
                    out.setdefault((m, target), line)
    return out


def test_function_local_imports_only_where_the_table_says_why():
    bad = [
        f"{MODULES[m].relative_to(SRC)}:{line}: {m} imports {t} inside a function"
        for (m, t), line in sorted(_local_imports().items())
        if (m, t) not in ALLOWED_LOCAL
    ]
    assert not bad, "move these to the module's top (or list them in ALLOWED_LOCAL with why):\n" + "\n".join(bad)


def test_the_local_import_table_holds_no_stale_entries():
    found = _local_imports()
    stale = [pair for pair in ALLOWED_LOCAL if pair not in found]
    assert not stale, stale
    assert "call" in {when for _, _, when in _imports("dejavu.probe")}, "function-local imports are read"
