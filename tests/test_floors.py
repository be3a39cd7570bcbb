"""The floors hold: every convcore module imports only from its own floor
or the floors below it (the floor table of ../shared/DESIGN.md, kept in
convcore/__init__.py's docstring).

Imports are read from the source with `ast`, including those inside
functions: a lazy import runs up a floor just the same when it executes.
Cython files are read line by line for their `cimport`/`import` lines."""
import ast
import pathlib
import re

import pytest

import convcore

PACKAGE = pathlib.Path(convcore.__file__).resolve().parent

# Lowest first. A module's floor is that of the longest prefix naming it.
# DESIGN.md numbers them 1 (kernels), 2 (functional), 3 (layers), 4, 5;
# the runtime helpers and the MPI layer sit between 1 and 2, usable by all.
FLOORS = [
    ("kernels", ["convcore._kernels", "convcore.native"]),
    ("runtime", ["convcore._runtime", "convcore.utils"]),
    ("functional", ["convcore.functional", "convcore.algorithms", "convcore.autotune"]),
    ("layers", ["convcore.nn", "convcore.optim", "convcore.init", "convcore.serialization",
                "convcore.testing"]),
    ("training", ["convcore.models", "convcore.data", "convcore.training",
                  "convcore.distributed", "convcore.checkpoint", "convcore.metrics",
                  "convcore.viz",
                  "convcore.onnx"]),
    ("commands", ["convcore.cli", "convcore.bench", "convcore.demo", "convcore.__main__"]),
]
LEVEL = {name: i for i, (name, _) in enumerate(FLOORS)}
# `convcore/__init__.py` gathers the public API up to the training floor
# (models, training): a bare `import convcore` depends on all of that.
PACKAGE_FLOOR = ("package", LEVEL["training"])


def floor_of(module):
    """(floor name, level) of a dotted convcore module name."""
    if module == "convcore":
        return PACKAGE_FLOOR
    best = None
    for name, prefixes in FLOORS:
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > len(best[1]):
                    best = (name, prefix)
    if best is None:
        raise LookupError(f"{module} has no floor: add its package to FLOORS")
    return best[0], LEVEL[best[0]]


def _is_module(dotted):
    """Whether convcore.<dotted> is a module or package in the source tree."""
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.is_dir() or path.with_suffix(".py").exists() or \
        any(path.parent.glob(path.name + ".*.so")) or path.with_suffix(".pyx").exists()


def _origin(name):
    """The module a name imported from the `convcore` package comes from:
    `from convcore import no_grad` depends on convcore._runtime.grad_mode,
    not on the package (which would make every such import look top-floor).
    None for package metadata such as __version__, which depends on nothing."""
    if name.startswith("__"):
        return None
    if _is_module(f"convcore.{name}"):
        return f"convcore.{name}"
    obj = getattr(convcore, name)
    return getattr(obj, "__name__", None) if isinstance(obj, type(convcore)) \
        else getattr(obj, "__module__", "convcore")


def imported_modules(source, module, is_package=False):
    """(line, imported convcore module) for every import in `source`."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "convcore"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parts = module.split(".")[:len(module.split(".")) - node.level + is_package]
                base = ".".join(parts + ([base] if base else []))
            if base == "convcore":
                out += [(node.lineno, _origin(a.name)) for a in node.names
                        if _origin(a.name) is not None]
            elif base.split(".")[0] == "convcore":
                out.append((node.lineno, base))
    return out


_CYTHON_FROM = re.compile(r"^\s*from\s+(convcore[\w.]*)\s+c?import\s+\(?([\w, ]+)", re.M)
_CYTHON_IMPORT = re.compile(r"^\s*c?import\s+(convcore[\w.]*)", re.M)


def cython_imported_modules(source):
    """(line, imported convcore module) for the import and cimport lines of
    a .pyx/.pxd file (first line of a parenthesised name list only)."""
    out = []
    for m in _CYTHON_FROM.finditer(source):
        line = source[:m.start()].count("\n") + 1
        if m.group(1) == "convcore":
            names = [n.strip().split(" as ")[0] for n in m.group(2).split(",") if n.strip()]
            out += [(line, _origin(n)) for n in names if _origin(n) is not None]
        else:
            out.append((line, m.group(1)))
    for m in _CYTHON_IMPORT.finditer(source):
        out.append((source[:m.start()].count("\n") + 1, m.group(1)))
    return sorted(out)


def violations(sources):
    """Imports that run up a floor, as readable lines. `sources` maps a
    dotted module name to (source text, is_package, is_cython)."""
    found = []
    for module, (source, is_package, is_cython) in sorted(sources.items()):
        floor, level = floor_of(module)
        imports = cython_imported_modules(source) if is_cython else \
            imported_modules(source, module, is_package)
        for line, target in imports:
            target_floor, target_level = floor_of(target)
            if target_level > level:
                found.append(f"{module}:{line} ({floor}) imports {target} ({target_floor})")
    return found


def package_sources():
    sources = {}
    for path in sorted(PACKAGE.rglob("*")):
        if path.suffix not in (".py", ".pyx", ".pxd") or "__pycache__" in path.parts:
            continue
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        name = ".".join(parts)
        sources[name + (".pxd" if path.suffix == ".pxd" else "")] = (
            path.read_text(encoding="utf-8"), is_package, path.suffix != ".py")
    return sources


def test_every_module_has_a_floor():
    for module in package_sources():
        floor_of(module.removesuffix(".pxd"))


def test_no_import_runs_up_a_floor():
    found = violations(package_sources())
    assert not found, "imports from a higher floor:\n" + "\n".join(found)


@pytest.mark.parametrize("module,source,bad", [
    # a layer reaching up to the training loop, hidden inside a function
    ("convcore.nn.fake", "def f():\n    from convcore.training import fit\n", True),
    # a kernel-floor helper importing the functional floor
    ("convcore._runtime.fake", "import convcore.functional as F\n", True),
    # a name taken from the package: judged by where it is defined
    ("convcore.functional.fake", "from convcore import nn\n", True),
    ("convcore.functional.fake", "from convcore import no_grad\n", False),
    # relative imports resolve against the module's package
    ("convcore.nn.fake", "from ..training import loop\n", True),
    ("convcore.nn.fake", "from . import module\n", False),
    # the MPI layer sits low: a layer may use it, and so may distributed
    ("convcore.nn.fake", "from convcore._runtime import mpi\n", False),
    ("convcore._runtime.fake", "from convcore.distributed import ddp\n", True),
    # commands may use anything, even the whole package
    ("convcore.cli.fake", "import convcore\nfrom convcore.training import fit\n", False),
    ("convcore.nn.fake", "import convcore\n", True),
])
def test_a_synthetic_violation_is_caught(module, source, bad):
    found = violations({module: (source, False, False)})
    assert bool(found) == bad, found


def test_cython_imports_are_read():
    source = ("from convcore._kernels.blas cimport gemm\nfrom convcore.nn import Conv2d\n"
              "    from convcore import __version__\nimport convcore.training\n")
    found = violations({"convcore._kernels.fake": (source, False, True)})
    assert found == ["convcore._kernels.fake:2 (kernels) imports convcore.nn (layers)",
                     "convcore._kernels.fake:4 (kernels) imports convcore.training (training)"]
