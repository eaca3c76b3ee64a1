"""Layering you can see: the client library loads nothing of the server, and no module of
`firmware` or `hal` takes part in an import cycle (lazy imports inside functions included)."""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("firmware", "hal")


def test_the_client_library_imports_nothing_of_the_server():
    code = ("import sys, firmware.client, firmware.client.onion_client\n"
            "bad = [m for m in ('firmware.serve', 'firmware.serve.pipeline', 'firmware.store',"
            " 'sqlite3', 'hal.core.bucket', 'firmware.net', 'firmware.node', 'firmware.device')"
            " if m in sys.modules]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.strip()
    assert out == "", f"firmware.client pulled in server modules: {out}"


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: pathlib.Path, name: str, known: set[str]) -> set[str]:
    """Every firmware/hal module `path` imports, at any depth of the file (lazy ones too)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` needs pkg.sub; `from pkg import name` needs pkg's __init__
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `from x import name` names a module or an attribute
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def import_graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    known = {_module_name(p) for p in files}
    return {_module_name(p): _imports(p, _module_name(p), known) for p in files}


def _cycle(graph):
    """One import cycle as a list of modules, or None (a submodule importing its own package's
    __init__, which re-exports it, counts: it only works by import order)."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = "done"
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_there_is_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 80  # the walk saw the tree
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"p": {"p.x"}, "p.x": set()}) is None
    assert _cycle({"p": {"p.x"}, "p.x": {"p"}}) == ["p", "p.x", "p"]
