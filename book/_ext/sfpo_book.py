"""Sphinx glue for the sfpo_edu book (Jupyter Book 1). Two small fixes, nothing else.

1. MathJax from a local copy. ``book/build.sh`` unpacks MathJax 3 (from npm) into
   ``book/_mathjax/mathjax/``. When that copy exists, ``book/_mathjax`` is added to
   ``html_static_path`` (the files land in ``_build/html/_static/mathjax/``) and
   ``mathjax_path`` points at it, so the pages show their math without a network. Without
   the copy (``jupyter-book build book`` run by hand, or no npm) nothing changes and the
   pages load MathJax from Sphinx's default CDN address. The copy lives outside
   ``book/_static`` on purpose: Jupyter Book 1 adds every ``.js`` file under ``_static`` to
   every page as a ``<script>``.

2. No duplicate inline scripts. With Sphinx 7, the inline ``<script>`` that sphinx-thebe
   (and sphinx-togglebutton) register while the documents are read ends up twice on every
   page, and the second ``const THEBE_JS_URL = ...`` throws "Uncaught SyntaxError:
   Identifier 'THEBE_JS_URL' has already been declared" in the browser console. The
   copies differ only in ``filename`` (``None`` vs ``""``), so Sphinx does not see them as
   equal; the last ``html-page-context`` handler drops repeats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.util import logging

logger = logging.getLogger(__name__)

STATIC_ROOT = Path(__file__).resolve().parents[1] / "_mathjax"  # book/_mathjax
SCRIPT = "mathjax/tex-chtml-full.js"  # relative to _static/ in the built site


def use_local_mathjax(app: Sphinx, config: Config) -> None:
    if (STATIC_ROOT / SCRIPT).is_file():
        config.html_static_path = [*config.html_static_path, str(STATIC_ROOT)]
        config.mathjax_path = SCRIPT
        logger.info("MathJax: local copy in %s", STATIC_ROOT / "mathjax")
    else:
        logger.info(
            "MathJax: no local copy in %s (book/build.sh fetches one); the pages "
            "will load MathJax from %s",
            STATIC_ROOT,
            config.mathjax_path,
        )


def drop_repeated_scripts(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        attributes = getattr(script, "attributes", {})
        key = (
            str(getattr(script, "filename", script) or ""),
            *sorted(attributes.items()),
        )
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Sphinx) -> dict[str, bool]:
    app.connect("config-inited", use_local_mathjax)
    # after every other handler has added its scripts for this page
    app.connect("html-page-context", drop_repeated_scripts, priority=999)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
