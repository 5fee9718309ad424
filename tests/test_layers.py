"""The agent's layers, pinned: who may import which I/O library, no import cycles, one caller of the executor."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parent.parent / "agent"
#: The reference side (relay, operator client, demo) is not the agent: it is left out of these rules.
REFERENCE = AGENT / "reference"

#: Each I/O library, and the one agent module allowed to import it.
OWNERS = {
    "websockets": "agent.shell.link",
    "asyncssh": "agent.runs.executor",
    "psycopg2": "agent.checks.db",
    "apscheduler": "agent.checks.scheduler",
    "requests": "agent.checks.http",
}
IO_LIBRARIES = {*OWNERS, "asyncio", "sqlite3", "socket", "ssl", "subprocess"}
#: Modules of pure logic: no I/O library, directly or through another agent module.
PURE = {
    "agent.session.core", "agent.session.ledger", "agent.session.protocol", "agent.session.answers",
    "agent.session.command_auth", "agent.session.protocol_v0", "agent.session.wire", "agent.session.notices",
    "agent.redaction", "agent.catalog.manifest", "agent.catalog.lockfile",
    "agent.runs.plan", "agent.runs.results", "agent.runs.gate", "agent.chat.render", "agent.chat.i18n",
    "agent.errors", "agent.shell.startup",
}  # fmt: skip


def _module_name(path: Path) -> str:
    parts = path.relative_to(AGENT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, typing_too: bool = False) -> set[str]:
    """Modules imported at run time (and under ``if TYPE_CHECKING:`` too, with ``typing_too``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test) and not typing_too:
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.add(child.module)
                found.update(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(tree)
    return found


MODULES = {
    _module_name(p): p for p in AGENT.rglob("*.py") if REFERENCE not in p.parents and p.parent != REFERENCE
}
GRAPH = {name: {i for i in _imports(path) if i in MODULES and i != name} for name, path in MODULES.items()}
#: With the imports made for type checking only: a cycle there is still a knot in the design.
TYPED_GRAPH = {
    name: {i for i in _imports(path, typing_too=True) if i in MODULES and i != name}
    for name, path in MODULES.items()
}


def _top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("library", sorted(OWNERS))
def test_exactly_one_agent_module_imports_each_io_library(library: str) -> None:
    importers = sorted(name for name, path in MODULES.items() if library in {_top(i) for i in _imports(path)})
    assert importers == [OWNERS[library]]


def _closure(name: str, graph: dict[str, set[str]] = GRAPH) -> set[str]:
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        for dep in graph.get(current, ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


@pytest.mark.parametrize("module", sorted(PURE))
def test_pure_modules_import_no_io_library_even_indirectly(module: str) -> None:
    assert module in MODULES, f"{module} is gone: update PURE"
    reached = {module, *_closure(module)}
    libraries = {name: {_top(i) for i in _imports(MODULES[name])} & IO_LIBRARIES for name in reached}
    assert {name: libs for name, libs in libraries.items() if libs} == {}


def test_no_import_cycles_between_agent_modules_not_even_for_type_checking() -> None:
    cycles = sorted(name for name in TYPED_GRAPH if name in _closure(name, TYPED_GRAPH) and name != "agent")
    assert cycles == []


def test_the_agent_does_not_import_the_reference_side() -> None:
    offenders = {name for name, path in MODULES.items()
                 if any(i.startswith("agent.reference") for i in _imports(path)) and not name.startswith("agent.cli")}  # fmt: skip
    assert offenders == set()


def test_only_the_run_gate_calls_the_executor() -> None:
    """``Executor.run`` is called from agent/runs/gate.py alone: every runbook run passes the gate."""
    callers = set()
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "run"
            ):
                target = ast.unparse(node.func.value).lower()
                if "executor" in target:
                    callers.add(name)
    assert callers == {"agent.runs.gate"}


#: The packages of the agent, lowest first: at run time a package imports only packages before it (a module
#: outside any package, such as ``agent.errors``, counts as a package of its own). A new package must be placed here.
LAYERS = [
    "chat", "errors", "redaction", "catalog", "config", "session", "state", "runs", "checks", "actions", "shell", "cli",
]  # fmt: skip


def _package(module: str) -> str:
    return module.split(".")[1] if module.count(".") else module


def test_every_package_has_its_place_in_the_layers() -> None:
    packages = {_package(name) for name in MODULES} - {"agent", "__main__"}
    assert packages == set(LAYERS)


def test_packages_import_only_the_layers_below_them() -> None:
    upward = sorted(
        (name, dep)
        for name, deps in GRAPH.items()
        for dep in deps
        if _package(name) in LAYERS
        and _package(dep) in LAYERS
        and LAYERS.index(_package(dep)) > LAYERS.index(_package(name))
    )
    assert upward == []


#: The modules that may read the process environment, and why: the entry points take it once and hand it on
#: (agent/config/environment.py), and two read where Windows keeps its system folders.
ENVIRON_READERS = {
    "agent.cli.root": "--env-file and AGENT_DEBUG, before anything else runs",
    "agent.cli.common": "the command line's Environment",
    "agent.cli.authors": "the signing key's passphrase",
    "agent.cli.service": "the service account's password",
    "agent.cli.reference": "the reference relay's and operator's tokens",
    "agent.config.schema": "AGENT_CONFIG: which file to load",
    "agent.shell.app": "the running agent's Environment",
    "agent.actions.dispatch": "SYSTEMDRIVE: the Windows system drive for CHECK_DISK_SPACE",
    "agent.cli.service_install": "SYSTEMROOT: where icacls.exe and sc.exe live",
}


def test_only_the_entry_points_read_the_process_environment() -> None:
    readers = {
        name
        for name, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute) and ast.unparse(node) in ("os.environ", "os.getenv")
    }
    assert readers == set(ENVIRON_READERS)
