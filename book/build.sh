#!/usr/bin/env bash
# Build the sfpo_edu book (Jupyter Book 1, HTML) with every warning treated as an error.
#
#   bash book/build.sh                           # -> book/_build/html/index.html
#   bash book/build.sh --path-output /tmp/book   # extra arguments go to `jupyter-book build`
#
# 1. MathJax for offline reading. `npm pack mathjax@$MATHJAX_VERSION` once, then unpack the
#    few files the pages use into book/_mathjax/mathjax/ (git-ignored, reused by later
#    builds); book/_ext/sfpo_book.py points the pages at it. Without npm or a network the
#    book still builds, and its pages load MathJax from the CDN instead.
# 2. Notebooks. Jupyter Book 1 reads only files under its root (book/), so notebooks/ is
#    copied to book/notebooks/ (git-ignored, replaced on every build) and book/data links
#    to data/ (so the notebooks find ../data/runs). A notebook that is not in
#    book/_toc.yml fails the build ("document isn't included in any toctree"). The build
#    executes every notebook in quick mode (SFPO_EDU_QUICK=1, _config.yml `execute`), so
#    the pages show figures and outputs; it needs the SmolLM2 weights (make setup).
# 3. `jupyter-book build book --all -W -n --keep-going`: all pages are re-read every time
#    (so a warning cannot hide in a page that an incremental build skips), and warnings and
#    broken references are errors.
set -euo pipefail

BOOK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BOOK")"
MATHJAX_VERSION="3.2.2"

JB="${JUPYTER_BOOK:-$ROOT/.venv/bin/jupyter-book}"
if [[ ! -x "$JB" ]]; then
    JB="$(command -v jupyter-book || true)"
fi
if [[ -z "$JB" ]]; then
    echo "book/build.sh: jupyter-book is not installed." >&2
    echo "Fix: .venv/bin/pip install -e \".[book]\"   (Jupyter Book 1: jupyter-book<2)" >&2
    exit 1
fi

# --- 1. MathJax ---------------------------------------------------------------------
fetch_mathjax() {
    local dest="$BOOK/_mathjax/mathjax" tmp
    if [[ "$(cat "$dest/VERSION" 2>/dev/null || true)" == "$MATHJAX_VERSION" ]]; then
        return 0
    fi
    if ! command -v npm >/dev/null; then
        echo "book/build.sh: npm not found; the pages will load MathJax from the CDN." >&2
        return 0
    fi
    tmp="$(mktemp -d)"
    if ! (cd "$tmp" && npm pack --silent "mathjax@$MATHJAX_VERSION" >/dev/null 2>npm.log); then
        echo "book/build.sh: 'npm pack mathjax@$MATHJAX_VERSION' failed" \
             "($(tail -n 1 "$tmp/npm.log")); the pages will load MathJax from the CDN." >&2
        rm -rf "$tmp"
        return 0
    fi
    tar -xzf "$tmp"/mathjax-*.tgz -C "$tmp"
    local es5="$tmp/package/es5" new="$dest.new"
    rm -rf "$new"
    mkdir -p "$new/output/chtml/fonts"
    cp "$es5/tex-chtml-full.js" "$new/"                      # TeX with every extension
    cp -R "$es5/output/chtml/fonts/woff-v2" "$new/output/chtml/fonts/"
    cp -R "$es5/ui" "$es5/a11y" "$es5/sre" "$new/"           # loaded by the right-click menu
    cp "$tmp/package/LICENSE" "$new/"
    echo "$MATHJAX_VERSION" >"$new/VERSION"
    rm -rf "$dest"
    mv "$new" "$dest"
    rm -rf "$tmp"
    echo "book/build.sh: MathJax $MATHJAX_VERSION unpacked into ${dest#"$ROOT"/}"
}
fetch_mathjax

# --- 2. Notebooks -------------------------------------------------------------------
rm -rf "$BOOK/notebooks"
if compgen -G "$ROOT/notebooks/*.ipynb" >/dev/null; then
    mkdir -p "$BOOK/notebooks"
    # Notebooks and the small files they show (images); not checkpoints, runs or weights.
    tar -C "$ROOT/notebooks" --exclude=.ipynb_checkpoints --exclude=__pycache__ \
        --exclude=runs --exclude='*.safetensors' --exclude='*.pt' \
        --exclude=README.md --exclude=solutions -cf - . |
        tar -C "$BOOK/notebooks" -xf -
fi
ln -sfn ../data "$BOOK/data"
export SFPO_EDU_QUICK=1

# --- 3. Build -----------------------------------------------------------------------
exec "$JB" build "$BOOK" --all -W -n --keep-going "$@"
