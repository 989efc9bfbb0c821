"""The concept map (book/concepts.md) names things that exist, and is what its generator
writes: every function, test, notebook section, book section and exercise it lists."""

import ast
import importlib
import importlib.util
import inspect
import json
from pathlib import Path

import pytest
from conftest import book_script

ROOT = Path(__file__).resolve().parents[1]


def load_concepts():
    return book_script("concepts")


concepts = load_concepts()
CONCEPTS = {c.name: c for c in concepts.CONCEPTS}


def headings(lines):
    return {line.lstrip("#").strip() for line in lines if line.startswith("#")}


def test_the_committed_page_is_what_the_generator_writes():
    assert concepts.PAGE.read_text() == concepts.render(), (
        "book/concepts.md is stale. Fix: run `python book/concepts.py` (or "
        "book/make_figures.py) and commit the page."
    )


def test_the_page_is_in_the_table_of_contents():
    assert "- file: concepts" in (ROOT / "book" / "_toc.yml").read_text()


@pytest.mark.parametrize("name", CONCEPTS)
def test_each_function_exists_and_points_to_its_book_page(name):
    concept = CONCEPTS[name]
    module, attribute = concept.function.rsplit(".", 1)
    obj = getattr(importlib.import_module(f"sfpo_edu.{module}"), attribute)
    page = concept.book[0]
    assert f":doc:`{page}`" in (inspect.getdoc(obj) or ""), (
        f"the docstring of {concept.function} should say 'Defined in :doc:`{page}`'"
    )


@pytest.mark.parametrize("name", CONCEPTS)
def test_each_test_exists(name):
    for entry in CONCEPTS[name].tests:
        file, test = entry.split("::")
        tree = ast.parse((ROOT / "tests" / file).read_text())
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert test in defined, entry


@pytest.mark.parametrize("name", CONCEPTS)
def test_each_notebook_and_book_section_exists(name):
    stem, heading = CONCEPTS[name].notebook
    cells = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())["cells"]
    text = "".join(
        "".join(c["source"]) + "\n" for c in cells if c["cell_type"] == "markdown"
    )
    assert heading in headings(text.splitlines()), (stem, heading)
    page, heading = CONCEPTS[name].book
    lines = (ROOT / "book" / f"{page}.md").read_text().splitlines()
    assert heading in headings(lines), (page, heading)


@pytest.mark.parametrize("name", CONCEPTS)
def test_each_exercise_exists(name):
    exercises = importlib.import_module("sfpo_edu.exercises")
    for check in CONCEPTS[name].exercises:
        assert callable(getattr(exercises, check, None)), check


def test_make_figures_writes_the_concept_map_too(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "make_figures", ROOT / "book" / "make_figures.py"
    )
    make_figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_figures)
    written = []
    monkeypatch.setattr(Path, "write_text", lambda self, text: written.append(text))
    make_figures.concept_page()
    assert written == [concepts.render()]
