"""The documentation site: every ```python block in docs/ runs, and `mkdocs build --strict` passes.

Blocks of one page run in order in one namespace (a page is a script a reader
follows), in a temporary working directory. A block is excluded only when the
line before its fence is `<!-- skip: reason -->`; the reasons are counted and
capped so that skipping does not become the habit.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import warnings

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MAX_SKIPPED_BLOCKS = 4

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)[ \t]*(?P<info>[^\n]*)$")
SKIP_MARKER = re.compile(r"^\s*<!--\s*skip:\s*(?P<reason>\S.*?)\s*-->\s*$")


def extract_blocks(text: str) -> list[dict]:
    """Fenced code blocks of a Markdown text: language, code, first line and skip reason (or None).

    Args:
        text: Markdown source.

    Returns:
        One dict per fenced block, in order, with keys "language", "code",
        "line" (1-based line of the opening fence) and "skip".
    """
    lines = text.split("\n")
    blocks = []
    index = 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        indent, fence = match["indent"], match["fence"]
        language = match["info"].split()[0].strip("{}.") if match["info"].strip() else ""
        previous = next((lines[j] for j in range(index - 1, -1, -1) if lines[j].strip()), "")
        skip = SKIP_MARKER.match(previous)
        body = []
        end = index + 1
        while end < len(lines) and not re.match(rf"^{re.escape(indent)}{fence[0]}{{{len(fence)},}}\s*$", lines[end]):
            body.append(lines[end][len(indent) :] if lines[end].startswith(indent) else lines[end])
            end += 1
        blocks.append(
            {"language": language, "code": "\n".join(body), "line": index + 1, "skip": skip["reason"] if skip else None}
        )
        index = end + 1
    return blocks


def markdown_pages() -> list[pathlib.Path]:
    return sorted(DOCS.rglob("*.md"))


def python_blocks(page: pathlib.Path) -> list[dict]:
    return [block for block in extract_blocks(page.read_text(encoding="utf-8")) if block["language"] == "python"]


PAGES_WITH_CODE = [page for page in markdown_pages() if python_blocks(page)]


def test_the_extractor_finds_fences_languages_and_skip_markers():
    text = "\n".join(
        [
            "Intro.",
            "```python",
            "x = 1",
            "```",
            "<!-- skip: needs a GPU -->",
            "",
            "```python",
            "y = 2",
            "```",
            "    ```bash",
            "    pip install x",
            "    ```",
            "````markdown",
            "```python",
            "inside = True",
            "```",
            "````",
        ]
    )
    blocks = extract_blocks(text)
    assert [(b["language"], b["skip"]) for b in blocks] == [
        ("python", None),
        ("python", "needs a GPU"),
        ("bash", None),
        ("markdown", None),
    ]
    assert blocks[0]["code"] == "x = 1" and blocks[0]["line"] == 2
    assert blocks[2]["code"] == "pip install x"
    assert blocks[3]["code"] == "```python\ninside = True\n```"


def test_the_docs_have_runnable_examples():
    assert len(PAGES_WITH_CODE) >= 5, [p.name for p in PAGES_WITH_CODE]


def test_few_blocks_are_skipped_and_each_says_why():
    skipped = [
        f"{page.relative_to(ROOT)}:{block['line']}: {block['skip']}"
        for page in markdown_pages()
        for block in python_blocks(page)
        if block["skip"] is not None
    ]
    assert len(skipped) <= MAX_SKIPPED_BLOCKS, "Too many skipped doc blocks:\n" + "\n".join(skipped)


def test_python_code_is_fenced_as_python():
    """`py`/`python3` fences would escape the runner."""
    loose = [
        f"{page.relative_to(ROOT)}:{block['line']}"
        for page in markdown_pages()
        for block in extract_blocks(page.read_text(encoding="utf-8"))
        if block["language"] in ("py", "python3", "Python")
    ]
    assert not loose, "Use ```python fences so the blocks run: " + ", ".join(loose)


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda page: str(page.relative_to(DOCS)))
def test_page_code_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page.stem}"}
    for block in python_blocks(page):
        if block["skip"] is not None:
            continue
        code = compile(block["code"], f"{page.relative_to(ROOT)}:{block['line']}", "exec")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the FID small-N warnings the pages discuss
            try:
                exec(code, namespace)  # noqa: S102 - running the docs is the point
            except FileNotFoundError as error:
                if "KERAS_DIFFUSION" in str(error):
                    pytest.skip(f"offline data missing for {page.name}: {error}")
                raise


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")
    pytest.importorskip("material", reason="mkdocs-material is not installed (pip install -e '.[docs]')")
    pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings[python] is not installed")
    environment = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "api" / "samplers" / "index.html").exists()
    shutil.rmtree(tmp_path / "site", ignore_errors=True)


def kd_names(code: str) -> set[str]:
    """Every dotted name `kd.a.b...` a piece of Python code uses."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Attribute):
            parts = []
            while isinstance(node, ast.Attribute):
                parts.append(node.attr)
                node = node.value
            if isinstance(node, ast.Name) and node.id == "kd":
                names.add(".".join(["kd", *reversed(parts)]))
    return names


def test_every_library_name_the_readme_uses_exists():
    import keras_diffusion as kd

    readme = extract_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    blocks = [block["code"] for block in readme if block["language"] == "python"]
    names = set().union(*(kd_names(code) for code in blocks))
    assert {"kd.models.load_pretrained", "kd.training.optimizer_for_run"} <= names
    missing = []
    for name in sorted(names):
        value = kd
        for part in name.split(".")[1:]:
            if not hasattr(value, part):
                missing.append(name)
                break
            value = getattr(value, part)
    assert not missing, f"the README uses names the library lacks: {missing}"


def test_the_readme_is_a_front_page_of_at_most_150_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; details belong in docs/"
