"""The package's shape: no import cycles (imports inside functions included), and
modules small enough to hold in one's head."""

import ast
import pathlib

import fastmlp

ROOT = pathlib.Path(fastmlp.__file__).resolve().parent
MAX_LINES = 450


def modules():
    """``{dotted name: path}`` of every Python module of the package."""
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(name, path, known):
    """The package's modules that ``name`` imports, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # "from pkg import mod" imports the module pkg.mod; "from mod import f", mod.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in known and t != name)
    return out


def test_no_import_cycles():
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    # A package's __init__ importing its own modules is how a package is made, not a
    # cycle: drop the edges from a module up to the packages that contain it.
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    state, cycles = {}, []

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_checker_sees_a_cycle_inside_a_function(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import g\n")
    known = {"pkg": pkg / "__init__.py", "pkg.a": pkg / "a.py", "pkg.b": pkg / "b.py"}
    assert imports("pkg.a", pkg / "a.py", known) == {"pkg.b"}
    assert imports("pkg.b", pkg / "b.py", known) == {"pkg.a"}


def test_no_module_is_too_long():
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert {k: v for k, v in sizes.items() if v > MAX_LINES} == {}


#: The modules whose public functions and methods carry type hints (mypy checks them in
#: CI; see [tool.mypy] in pyproject.toml).
TYPED = ("model", "fitting", "callbacks", "optim", "export", "plot", "sklearn", "threads")


def unannotated(path):
    """``name`` of each public function or method of ``path`` missing a parameter or
    return annotation."""
    missing = []

    def visit(node, prefix, public):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.", public and not child.name.startswith("_"))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = child.name
                if not public or (name.startswith("_") and name != "__init__"):
                    continue
                a = child.args
                params = [p for p in a.posonlyargs + a.args + a.kwonlyargs
                          if p.arg not in ("self", "cls")]
                params += [p for p in (a.vararg, a.kwarg) if p is not None]
                if any(p.annotation is None for p in params) or \
                        (child.returns is None and name != "__init__"):
                    missing.append(prefix + name)

    visit(ast.parse(path.read_text()), "", True)
    return missing


def test_the_public_api_is_annotated():
    assert (ROOT / "py.typed").exists()
    missing = {m: unannotated(ROOT / f"{m}.py") for m in TYPED}
    assert not {m: v for m, v in missing.items() if v}
