"""The tagger package's own imports: no circles, and only the CLI reaches the output layer.

Read from the source with ``ast``, so imports inside functions (the lazy ones) and under
``if TYPE_CHECKING:`` count as much as those at the top of a module."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import tagger

PACKAGE = Path(tagger.__file__).parent


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> Iterable[str]:
    """The package's modules that one import statement in ``module`` names."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: from the module's package, one level up per extra dot
            package = module.split(".") if is_package else module.split(".")[:-1]
            anchor = package[: len(package) - (node.level - 1)]
            base = ".".join([*anchor, *([base] if base else [])])
        for alias in node.names:
            # `from tagger import tasks` imports the module tagger.tasks; `from tagger.db
            # import Job` imports tagger.db.
            full = f"{base}.{alias.name}"
            yield full if full in known else base


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports, for every ``.py`` under
    ``root`` (a package folder)."""
    paths = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    known = set(paths)
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        targets = {
            target for node in ast.walk(tree) for target in _imported(node, name, is_package, known)
        }
        graph[name] = {t for t in targets if t in known and t != name}
    return graph


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in done:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_circle():
    """No tagger module imports, directly or through others, a module that imports it."""
    graph = import_graph(PACKAGE)
    assert "tagger.tasks" in graph["tagger.celery_app"]  # the walk sees real imports
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_nothing_imports_the_module_level_app():
    """tagger.app reads the environment when imported (for `celery -A tagger.app` and
    Flower); no tagger module imports it, so settings stay read by entry points."""
    graph = import_graph(PACKAGE)
    assert "tagger.app" in graph  # the walk found the module
    assert {m for m, deps in graph.items() if "tagger.app" in deps} == set()


def _in_cli(module: str) -> bool:
    return module == "tagger.cli" or module.startswith("tagger.cli.")


def test_only_the_cli_reaches_the_output_layer():
    """Nothing outside the tagger.cli package imports it, and only tagger.cli's modules
    import tagger.output: use cases return data and never print."""
    graph = import_graph(PACKAGE)
    cli_importers = {
        m for m, deps in graph.items() if not _in_cli(m) and any(_in_cli(d) for d in deps)
    }
    output_importers = {m for m, deps in graph.items() if "tagger.output" in deps}
    assert cli_importers == set()
    assert output_importers and all(_in_cli(m) for m in output_importers), output_importers


def test_the_walk_finds_a_circle_closed_inside_a_function(tmp_path):
    """A circle closed by an import inside a function, or by `from pkg import mod`, or by a
    relative import, is found and printed in order."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def later():\n    from .c import thing\n")
    (pkg / "c.py").write_text("import pkg.a\nthing = 1\n")
    (pkg / "d.py").write_text("from pkg.c import thing\n")
    graph = import_graph(pkg)
    assert graph["pkg.b"] == {"pkg.c"} and graph["pkg.d"] == {"pkg.c"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    (pkg / "c.py").write_text("thing = 1\n")
    assert find_cycle(import_graph(pkg)) is None
