"""Griffe extension for the API reference: reads this project's docstring layout.

The library's docstrings (see STYLE.md) end with an `Example:` heading followed
by doctest lines at the same indentation, which Python's doctest runs but
Google-style parsers do not treat as a section (they expect `Examples:` with an
indented body). This extension rewrites, before parsing, each `Example:` /
`Examples:` heading whose body is not indented into an indented `Examples:`
section, so mkdocstrings renders the doctests as code. An `Args:` section whose
only content is `None.` (a class without constructor arguments) is dropped.
Nothing else in a docstring is touched.
"""

import re

import griffe

_SECTION = re.compile(r"^[A-Z][A-Za-z ]*:\s*$")
_EXAMPLE_HEADINGS = ("Example:", "Examples:")


def normalise_docstring(text: str) -> str:
    """Returns `text` with unindented example sections indented and empty `Args:` dropped.

    Args:
        text: a docstring, already dedented (as griffe stores it).

    Returns:
        The docstring in the layout griffe's Google parser expects.
    """
    lines = text.split("\n")
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        stripped = line.strip()
        following = lines[index + 1].strip() if index + 1 < len(lines) else ""
        if stripped == "Args:" and following == "None." and line == stripped:
            index += 2
            continue
        if line in _EXAMPLE_HEADINGS and index + 1 < len(lines) and not lines[index + 1].startswith(" "):
            out.append("Examples:")
            index += 1
            while index < len(lines) and not _SECTION.match(lines[index]):
                out.append(("    " + lines[index]) if lines[index].strip() else "")
                index += 1
            continue
        out.append(line)
        index += 1
    return "\n".join(out)


class ExampleSections(griffe.Extension):
    """Applies `normalise_docstring` to every object loaded for the API pages."""

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = normalise_docstring(obj.docstring.value)
