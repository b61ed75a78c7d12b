"""The core's import graph, read from the source: no circle, and no module imports a layer
above its own.

Every ``import`` and ``from ... import`` of a ``convgen`` module counts, at module level
or inside a function (a lazy import is still a dependency); only those under
``if TYPE_CHECKING:`` are left out, since they never run. Registrations by reference
(``"package.module:attribute"`` strings) are not imports: that is how the default plugins
name recipes and backends without importing them.

The layers, lowest first (a module may import its own layer and the layers below):

- **leaf**: helpers that import no other convgen module: errors, signature checks, progress
  bars, torchrun set-up, the package itself (the ``hookimpl`` marker);
- **kernel**: the plugin API and its machinery: hook specs, the plugin manager, the
  registries, recipe configs;
- **library**: everything a recipe or a plugin builds on: files (atomic writes, samples by
  suffix), plotting, datasets, input pipelines, weights, encoders (``nets/``), metric
  learning (``metric/``), style transfer (``style/``), visualisation, galleries;
- **recipes**: running a recipe (``recipes.py``), the core recipes' entry points, and the
  core's own plugins (``default_plugins/``), which wire the library into the registries;
- **cli**: the command line, and ``convgen.testing`` (which drives it).

``python tests/test_architecture.py`` prints the picture of the layers that
docs/architecture.md shows; the test checks that the page shows the current one.
"""

from __future__ import annotations

import ast
import sys
from fnmatch import fnmatchcase
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "convgen"
DOC = ROOT / "docs" / "architecture.md"

#: (layer, modules), lowest first. Names are relative to ``convgen`` ("" is the package
#: itself); ``pkg.*`` means the package and everything in it. An exact name wins over a
#: pattern, so a recipe module inside a library package sits in the recipes layer.
LAYERS: list[tuple[str, list[str]]] = [
    ("leaf", ["", "errors", "signatures", "progress", "distributed", "runtime"]),
    ("kernel", ["hookspecs", "plugins", "registry", "config"]),
    ("library", ["io", "plotting", "data", "pipelines", "weights", "scaffold",
                 "nets.*", "metric.*", "style.*", "visualize.*", "gallery.*"]),
    ("recipes", ["recipes.*", "running", "plugin_api", "gallery.recipes", "default_plugins.*"]),
    ("cli", ["cli.*", "__main__", "testing"]),
]  # fmt: skip


def core_modules() -> dict[str, Path]:
    """Dotted name relative to ``convgen`` ("" for the package) -> source file."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(node: ast.Import | ast.ImportFrom, here: str, is_package: bool) -> list[str]:
    """Absolute dotted names one import statement loads: ``from convgen import io`` loads
    ``convgen.io``; ``from convgen.io import read`` loads ``convgen.io`` (the caller keeps
    the longest name that is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: resolve against this module's package
        package = ("convgen." + here if here else "convgen") if is_package else ("convgen." + here).rpartition(".")[0]
        base = package.split(".")
        module = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    return [f"{module}.{alias.name}" for alias in node.names]


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported core module: line of the first such import}."""
    modules = core_modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        is_package = path.name == "__init__.py"

        class Visitor(ast.NodeVisitor):
            def visit_If(self, node: ast.If) -> None:
                if _is_type_checking(node.test):
                    for child in node.orelse:
                        self.visit(child)
                else:
                    self.generic_visit(node)

            def visit_Import(self, node) -> None:
                for imported in _imported(node, name, is_package):
                    if imported != "convgen" and not imported.startswith("convgen."):
                        continue
                    target = imported.removeprefix("convgen").removeprefix(".")
                    while target and target not in modules:  # convgen.nets.TappedEncoder -> convgen.nets
                        target = target.rpartition(".")[0]
                    if target != name:
                        edges.setdefault(target, node.lineno)

            visit_ImportFrom = visit_Import

        Visitor().visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        graph[name] = edges
    return graph


def layer_of(name: str) -> int | None:
    for index, (_, members) in enumerate(LAYERS):
        if name in members:
            return index
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            if member.endswith(".*") and (name == member[:-2] or fnmatchcase(name, member)):
                return index
    return None


def _label(name: str) -> str:
    return f"convgen.{name}" if name else "convgen"


def _where(module: str, line: int) -> str:
    path = core_modules()[module].relative_to(ROOT)
    return f"{path}:{line}"


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def picture(graph: dict[str, dict[str, int]]) -> str:
    """The layers, top first, each with its members and the layers its modules import."""
    lines = []
    for index in reversed(range(len(LAYERS))):
        name, members = LAYERS[index]
        shown = ", ".join(m[:-2].replace(".", "/") + "/" if m.endswith(".*") else (m.replace(".", "/") + ".py" if m else "__init__.py") for m in members)
        used = sorted({layer_of(t) for source, edges in graph.items() if layer_of(source) == index for t in edges} - {index, None}, reverse=True)
        lines.append(f"{name:<8} {shown}")
        if used:
            lines.append(f"{'':<8} imports: {', '.join(LAYERS[u][0] for u in used)}")
        if index:
            lines.append(f"{'':<8} ↓")
    return "\n".join(lines)


def test_every_core_module_has_a_layer():
    missing = sorted(_label(m) for m in core_modules() if layer_of(m) is None)
    assert not missing, f"put these modules in a layer of LAYERS in tests/test_architecture.py (and docs/architecture.md): {', '.join(missing)}"


def test_the_core_import_graph_has_no_circle():
    graph = import_graph()
    found = circles(graph)
    report = []
    for component in found:
        members = set(component)
        edges = [f"{_label(a)} -> {_label(b)} ({_where(a, line)})" for a in component for b, line in sorted(graph[a].items()) if b in members]
        report.append("circle among " + ", ".join(map(_label, component)) + ":\n    " + "\n    ".join(edges))
    assert not found, "the core's imports must form a DAG:\n" + "\n".join(report)


def test_no_core_module_imports_a_higher_layer():
    graph = import_graph()
    upward = []
    for source, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            low, high = layer_of(source), layer_of(target)
            if low is not None and high is not None and high > low:
                upward.append(f"{_label(source)} ({LAYERS[low][0]}) -> {_label(target)} ({LAYERS[high][0]}) at {_where(source, line)}")
    assert not upward, "imports from a higher layer (move the shared code down, or the module up):\n" + "\n".join(upward)


def test_the_graph_sees_lazy_imports_and_skips_type_checking_ones():
    """The reader of the graph itself: a function-level import is an edge, a TYPE_CHECKING
    one is not (checked on the real sources, so a refactoring cannot blind the test)."""
    graph = import_graph()
    source = (PACKAGE / "registry.py").read_text(encoding="utf-8")
    assert "    from convgen.plugins import get_plugin_manager" in source  # inside get_registry
    assert "plugins" in graph["registry"]
    io_source = (PACKAGE / "io.py").read_text(encoding="utf-8")
    assert "if TYPE_CHECKING:\n    import torch" in io_source and "errors" in graph["io"]
    assert circles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]
    assert circles({"a": {"b": 1}, "b": {}}) == []


def test_docs_show_the_current_picture_of_the_layers():
    expected = picture(import_graph())
    text = DOC.read_text(encoding="utf-8")
    assert f"```text\n{expected}\n```" in text, (
        "docs/architecture.md must show the layers as the code has them; replace its picture with "
        f"the output of `python tests/test_architecture.py`:\n{expected}"
    )


if __name__ == "__main__":
    print(picture(import_graph()))
