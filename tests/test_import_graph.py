"""No import circles inside cropi's packages, and dependencies point down only (flows → tasks → storage /
cropi_core). Every module is read with `ast`, module-level AND function-local imports (a circle hidden behind a
function-local import is still a circle: the two modules cannot be understood or tested apart)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("cropi_core", "storage", "tasks", "flows")
CHECKED = PACKAGES  # packages that must be free of circles (each alone, and all together)
FORBIDDEN = {  # package → top-level names it must not import
    "cropi_core": {"prefect", "storage", "tasks", "flows"},
    "storage": {"prefect", "tasks", "flows"},
    "tasks": {"flows"},
}


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((REPO / pkg).rglob("*.py")):
            parts = list(f.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


def imports(name: str, path: Path, known: set[str]) -> list[str]:
    """Every module named by an import statement anywhere in `path` (absolute names)."""
    is_pkg = path.name == "__init__.py"
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_pkg else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append(sub if sub in known else base)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    g: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps = set()
        for imp in imports(name, path, known):
            # the module itself or the nearest enclosing module we know (`import a.b.c` → a.b.c)
            parts = imp.split(".")
            while parts and ".".join(parts) not in known:
                parts.pop()
            if parts and ".".join(parts) != name:
                deps.add(".".join(parts))
        g[name] = deps
    return g


def find_cycle(g: dict[str, set[str]], nodes: set[str]) -> list[str] | None:
    """One import circle among `nodes` (as a path a → b → … → a), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(g.get(n, ())):
            if d not in nodes:
                continue
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                c = visit(d)
                if c:
                    return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(nodes):
        if n not in state:
            c = visit(n)
            if c:
                return c
    return None


def test_find_cycle_names_the_circle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(g, set(g)) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}, {"a", "b"}) is None


def test_relative_and_submodule_imports_resolve(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from . import x\nfrom .y import z\ndef f():\n    from storage import keys\n")
    got = imports("storage.m", f, {"storage.x", "storage.y", "storage.keys", "storage"})
    assert got == ["storage.x", "storage.y", "storage.keys"]


def test_no_import_circles():
    g = graph()
    for pkg in CHECKED:
        nodes = {n for n in g if n == pkg or n.startswith(pkg + ".")}
        assert nodes, pkg
        cycle = find_cycle(g, nodes)
        assert cycle is None, f"import circle in {pkg}/: {' -> '.join(cycle)}"
    # and none across the packages together
    every = {n for n in g if n.split(".")[0] in CHECKED}
    cycle = find_cycle(g, every)
    assert cycle is None, f"import circle: {' -> '.join(cycle)}"


def test_layering():
    mods = modules()
    known = set(mods)
    bad = []
    for name, path in mods.items():
        pkg = name.split(".")[0]
        for imp in imports(name, path, known):
            if imp.split(".")[0] in FORBIDDEN.get(pkg, ()):
                bad.append(f"{name} imports {imp}")
    assert not bad, "layering broken (flows → tasks → storage / cropi_core):\n" + "\n".join(bad)

