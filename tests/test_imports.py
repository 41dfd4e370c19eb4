"""Imports point one way, down the layers of the ``spike`` package.

Read from the source (every ``import`` statement, also inside functions),
not from ``sys.modules``: a module that imports upward only when a function
runs counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import ROOT

PACKAGE = ROOT / "spike"

#: Bottom first. A unit (a top-level module, or a subpackage as a whole)
#: imports only units of lower layers: never one of its own layer, never one
#: above. A new module goes in the lowest layer that holds what it imports.
LAYERS = [
    # what every part may use; none imports another part of spike
    ["spike.errors", "spike._version", "spike._display", "spike._limits", "spike._address"],
    # the wire rules, and the helpers that sit on them
    ["spike.protocol", "spike._logwriter", "spike._serving"],
    # what stands on the wire rules: ops, and the command lines' argument
    # types (a token must fit the auth line)
    ["spike.ops", "spike._args"],
    # the client and the server never import each other
    ["spike.client", "spike.server", "spike._loader"],
    ["spike"],  # the public API: spike/__init__.py
    # the programs: command lines and the benchmark, neither importing the other
    ["spike.cli", "spike.bench"],
]

#: ``python -m spike.server`` and friends: entry points that only call the CLI.
SHIMS = {"spike.__main__", "spike.server.__main__", "spike.client.__main__"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str) -> set[str]:
    """The spike modules ``name`` imports: ``from .x import y`` is ``x``, or
    ``x.y`` when ``y`` is a module."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                found.add(
                    f"{module}.{alias.name}" if f"{module}.{alias.name}" in MODULES else module
                )
    return {module for module in found if module == "spike" or module.startswith("spike.")}


GRAPH = {name: _imports(name) for name in MODULES}


def _unit(module: str) -> str:
    """The layer unit of ``module``: ``spike.server._loop`` is ``spike.server``."""
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()):
        return ".".join(parts[:2])
    return module


LAYER_OF = {unit: number for number, layer in enumerate(LAYERS) for unit in layer}


def test_every_module_has_a_layer() -> None:
    units = {_unit(name) for name in MODULES if name not in SHIMS}
    missing = sorted(units - LAYER_OF.keys())
    assert not missing, f"put these in a layer in {Path(__file__).name}: {missing}"


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name not in SHIMS
        for target in targets
        if _unit(target) != _unit(name)
        and LAYER_OF.get(_unit(target), -1) >= LAYER_OF.get(_unit(name), -1)
    ]
    assert not upward, "\n".join(upward)


def test_the_lowest_modules_import_nothing_above_them() -> None:
    assert GRAPH["spike.errors"] == set()
    assert GRAPH["spike.protocol"] <= {"spike.errors"}


def test_nothing_but_the_entry_shims_imports_the_command_line() -> None:
    """The library, the benchmark and the ``__main__`` entry points never
    import ``spike.cli``; only the shims do, and they only call it."""
    outside = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if _unit(name) != "spike.cli" and name not in SHIMS
        for target in targets
        if _unit(target) == "spike.cli"
    ]
    assert not outside, "\n".join(outside)


@pytest.mark.parametrize("name", sorted(SHIMS))
def test_an_entry_shim_is_named_so_and_only_calls_the_cli(name: str) -> None:
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    docstring = ast.get_docstring(tree) or ""
    assert docstring.startswith("Shim:"), docstring
    imported, guard = tree.body[1:]  # after the docstring: an import and a guarded call
    assert isinstance(imported, ast.ImportFrom) and isinstance(guard, ast.If), ast.dump(tree)
    (run,) = guard.body
    assert isinstance(run, ast.Raise), ast.dump(run)
    assert GRAPH[name] <= {"spike.cli"}


def test_no_module_imports_another_packages_private_module() -> None:
    """``spike.cli._args`` is the CLI's own: the benchmark takes the shared
    argument types from ``spike._args``, which is below both."""
    private = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        for target in targets
        if target.count(".") >= 2
        and target.rpartition(".")[2].startswith("_")
        and not f"{name}.".startswith(f"{target.rpartition('.')[0]}.")
    ]
    assert not private, "\n".join(private)


def test_no_module_imports_itself_back() -> None:
    """No cycle between modules, also inside a package (``_loop`` imports
    ``_connection``, which reports back through an interface instead)."""

    def cycle_from(start: str) -> list[str] | None:
        path, seen = [start], {start}

        def walk(name: str) -> list[str] | None:
            for step in sorted(GRAPH.get(name, ())):
                if step == start:
                    return [*path, step]
                if step in seen:
                    continue
                seen.add(step)
                path.append(step)
                if (found := walk(step)) is not None:
                    return found
                path.pop()
            return None

        return walk(start)

    cycles = [cycle for name in GRAPH if name not in SHIMS and (cycle := cycle_from(name))]
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


#: Inside the server package, bottom first: how an op runs and the ordered
#: reply queue know nothing of connections or the loop; a connection knows
#: nothing of the loop (it reports through an interface).
SERVER_LAYERS = [
    ["spike.server._poller", "spike.server._net", "spike.server._replies", "spike.server._auth"],
    ["spike.server._dispatch"],
    ["spike.server._connection"],
    ["spike.server._loop"],
]


def test_the_server_package_imports_one_way_inside() -> None:
    level = {name: n for n, layer in enumerate(SERVER_LAYERS) for name in layer}
    assert set(level) == {name for name in MODULES if name.startswith("spike.server._")} - {
        "spike.server.__main__"
    }
    for name, n in level.items():
        for imported in GRAPH[name]:
            if imported in level:
                assert level[imported] < n, f"{name} imports {imported}"
    assert not any(name.startswith("spike.server") for name in GRAPH["spike.ops"])
