"""Dependencies point one way (design.md, "Dependency direction"): read from the source.

The algorithm modules import only torch, the standard library and each other (and
``config``, which imports only the standard library); ``logprobs`` needs neither the
generation code nor transformers; no notebook imports the command line; and the import
graph of ``sfpo_edu`` has no cycle, counting imports inside functions too. Also the
library's one other shape rule that a reader can check by eye: short functions.
"""

import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sfpo_edu"
ALGORITHM = {"sfpo", "losses", "params", "toy", "records"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


def imports(path: Path) -> tuple[set[str], set[str]]:
    """(sfpo_edu modules, other top-level packages) that a file imports anywhere."""
    ours, others = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "sfpo_edu":
                ours |= {alias.name for alias in node.names}
            elif node.module.startswith("sfpo_edu."):
                ours.add(node.module.removeprefix("sfpo_edu."))
            else:
                others.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sfpo_edu."):
                    ours.add(alias.name.removeprefix("sfpo_edu."))
                else:
                    others.add(alias.name.split(".")[0])
    return ours, others


GRAPH = {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_algorithm_modules_import_only_torch_the_stdlib_and_each_other():
    allowed_ours = ALGORITHM | {"config"}
    allowed_others = set(sys.stdlib_module_names) | {"torch", "__future__"}
    for name in sorted(ALGORITHM | {"config"}):
        ours, others = GRAPH[name]
        assert ours <= allowed_ours, (name, sorted(ours - allowed_ours))
        assert others <= allowed_others, (name, sorted(others - allowed_others))
    assert GRAPH["config"][0] == set() and "torch" not in GRAPH["config"][1]


def test_logprobs_needs_neither_generation_nor_transformers():
    ours, others = GRAPH["logprobs"]
    assert not ours & {"rollouts", "models"}, ours
    assert "transformers" not in others


def test_the_import_graph_has_no_cycle():
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", f"import cycle: {' -> '.join(trail)}"
        state[name] = "open"
        for dep in sorted(GRAPH.get(name, (set(), set()))[0]):
            visit(dep, [*trail, dep])
        state[name] = "done"

    for name in GRAPH:
        visit(name, [name])


def test_no_notebook_imports_the_command_line():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            source = "".join(cell["source"])
            if cell["cell_type"] == "code":
                assert "sfpo_edu.cli" not in source, path.name
                assert "from sfpo_edu import cli" not in source, path.name


def test_the_library_imports_nothing_from_notebooks_book_or_bench():
    for name, (_, others) in GRAPH.items():
        assert not others & {"notebooks", "book", "bench"}, name


def test_no_function_is_longer_than_a_screen():
    """A function reads on one screen: at most 60 lines, docstring included (issue 17);
    only plotting's figure builders may be longer."""
    long = [
        f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "plotting.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > 60
    ]
    assert not long, f"split these by meaning: {long}"
