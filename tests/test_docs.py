"""The documentation and the code stay true to each other, and the code keeps its house rules: the
README is a user guide of about 12 KB, every file and symbol the docs name exists, every module has a
docstring and no function is longer than 80 lines."""

from __future__ import annotations

import ast
import builtins
import functools
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "lerobot_pirl"
DOCS = ["README.md", "docs/method.md", "docs/architecture.md", "benchmarks/README.md", "recipes/README.md"]
MAX_FUNCTION_LINES = 80


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@functools.cache
def _definitions() -> tuple[set[str], dict[str, set[str]]]:
    """Every function / constant name, and every class with its attributes, in the package, the tests
    and LeRobot (the docs name LeRobot's classes too)."""
    import lerobot

    names: set[str] = set(dir(builtins))
    classes: dict[str, set[str]] = {}
    lerobot_sources = sorted(Path(lerobot.__file__).parent.rglob("*.py"))
    for path in [*_sources(), *sorted((REPO / "tests").glob("*.py")), *lerobot_sources]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                members = classes.setdefault(node.name, set())
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        members.add(item.name)
                    elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        members.add(item.target.id)
                    elif isinstance(item, ast.Assign):
                        members.update(t.id for t in item.targets if isinstance(t, ast.Name))
                members.update(
                    t.attr
                    for sub in ast.walk(node)
                    if isinstance(sub, ast.Assign | ast.AnnAssign)
                    for t in (sub.targets if isinstance(sub, ast.Assign) else [sub.target])
                    if isinstance(t, ast.Attribute)
                )
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names, classes


def test_readme_is_a_user_guide():
    readme = (REPO / "README.md").read_bytes()
    assert len(readme) <= 12_500, f"README.md is {len(readme)} bytes: move details to docs/ or benchmarks/"
    image = re.search(r"!\[[^\]]*\]\(([^)]+\.png)\)", readme.decode())
    assert image and (REPO / image.group(1)).is_file(), "README's picture must be committed"


@pytest.mark.parametrize("doc", DOCS)
def test_every_path_a_doc_names_exists(doc):
    text = (REPO / doc).read_text()
    paths = set(
        re.findall(r"`((?:lerobot_pirl|tests|examples|recipes|scripts)/[\w/.-]+\.(?:py|json|sh))`", text)
    )
    paths |= set(re.findall(r"\]\(((?:\.\./)?(?:docs|benchmarks|recipes|examples)/[\w/.-]+)\)", text))
    base = (REPO / doc).parent
    missing = [p for p in paths if not ((REPO / p).exists() or (base / p).exists())]
    assert not missing, f"{doc} names files that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS)
def test_every_symbol_a_doc_names_exists(doc):
    """``Class``, ``Class.member`` and ``function()`` in backticks name real code (of this package or of
    LeRobot, which the docs name as ``lerobot.*``)."""
    names, classes = _definitions()
    text = (REPO / doc).read_text()
    missing = []
    for token in re.findall(r"`([A-Za-z_][\w.]*)(?:\([^`]*\))?`", text):
        parts = token.split(".")
        if parts[0] == "lerobot" or len(parts) > 2:
            continue
        head = parts[0]
        if len(parts) == 2 and head in classes:
            if parts[1] not in classes[head]:
                missing.append(token)
        elif (
            len(parts) == 1
            and re.fullmatch(r"(?:[A-Z][a-z0-9]+){2,}", head)
            and head not in classes
            and head not in names
            and not any(head in members for members in classes.values())
        ):
            missing.append(token)  # a CamelCase name: a class (or a gRPC method) that does not exist
    calls = re.findall(r"`([a-z_][\w]*)\(\)`", text)
    missing += [c for c in calls if c not in names and not any(c in m for m in classes.values())]
    assert not missing, f"{doc} names symbols that do not exist: {sorted(set(missing))}"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(REPO)))
def test_modules_have_docstrings_and_short_functions(path):
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree), f"{path} has no module docstring"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_readme_results_are_the_benchmark_results():
    from lerobot_pirl.bench.report import committed_results, readme_table

    rows = committed_results(REPO / "benchmarks")
    assert len(rows) > 1
    table = readme_table(rows)
    assert table in (REPO / "README.md").read_text(), (
        "README's results table is not the committed results': paste `python -m lerobot_pirl.bench.report`"
    )
    for r in rows:  # every committed row is in the table
        assert f"{r.sft_success:.2f} -> {r.rl_success:.2f}" in table
