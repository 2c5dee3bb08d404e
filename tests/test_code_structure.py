"""Structure rules of the package (issue 10): no import cycle between ratcli modules, no
module over 350 lines, every public (`__all__`) function used somewhere outside its module
(by the package, the tests, the examples, benchmarks or recipes)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ratcli"
MAX_LINES = 350


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """ratcli modules `path` imports anywhere (functions included, TYPE_CHECKING blocks
    excluded): `from a.b import c` counts as a.b.c when that is a module, else a.b."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(path, name, modules) for name, path in modules.items()}
    # a package's __init__ re-exporting its submodules is not a cycle with them
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")
                       and not m.startswith(name + ".")}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_format_table_never_imports_input_discovery():
    """Issue 25: io/sources.py asks the format table (io/formats.py); the table, its type
    hints and the format modules it loads by name never import io/sources.py back (Source
    and the content tests they need live in the leaf io/inputs.py)."""
    from ratcli.io.formats import _MODULES

    def imported(name: str) -> set[str]:  # TYPE_CHECKING and function-level included
        tree = ast.parse(_modules()[name].read_text())
        return ({a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
                | {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)})

    for name in ("ratcli.io.formats", "ratcli.io.inputs", *_MODULES):
        assert "ratcli.io.sources" not in imported(name), name
    assert "ratcli.io.formats" not in imported("ratcli.io.inputs")


def test_no_module_over_the_line_limit():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def _uses(path: Path) -> str:
    """The code of `path` without its plain imports and `__all__` (a re-export is not a
    use; `import f as _f` is kept: the module calls f under another name)."""
    tree = ast.parse(path.read_text())
    tree.body = [n for n in tree.body if not (isinstance(n, ast.Import | ast.ImportFrom)
                                              and not any(a.asname for a in n.names))
                 and not (isinstance(n, ast.Assign)
                          and any(getattr(t, "id", "") == "__all__" for t in n.targets))]
    return ast.unparse(tree)


def test_every_public_function_is_used_outside_its_module():
    files = [p for d in ("ratcli", "tests", "examples", "benchmarks", "weights")
             for p in (ROOT / d).rglob("*.py")]
    uses = {p: _uses(p) for p in files}
    unused = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        public = {c.value for n in tree.body if isinstance(n, ast.Assign)
                  and any(getattr(t, "id", "") == "__all__" for t in n.targets)
                  for c in ast.walk(n.value) if isinstance(c, ast.Constant)}
        # decorated functions (CLI commands) are used through their decorator
        functions = {n.name for n in tree.body
                     if isinstance(n, ast.FunctionDef) and not n.decorator_list}
        for item in sorted(public & functions):
            pattern = re.compile(rf"\b{re.escape(item)}\b")
            if not any(pattern.search(text) for p, text in uses.items() if p != path):
                unused.append(f"{name}.{item}")
    assert unused == [], "unused public functions: " + ", ".join(unused)
