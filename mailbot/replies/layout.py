"""The Jinja2 environments of mailbot's templates and the paragraph markup of the reply
layouts (pure).

Customer text is only ever template *data*; nothing from a mail is compiled as a template.
The HTML environment autoescapes, both are sandboxed and use StrictUndefined.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape

__all__ = ["html_paragraphs", "template_environments", "text_paragraphs"]

TEXT_WIDTH: Final = 76


def template_environments(directory: Path) -> tuple[SandboxedEnvironment, SandboxedEnvironment]:
    """The sandboxed Jinja2 environments for text (no escaping) and HTML (autoescaped) of the
    templates under `directory`; undefined names are errors."""
    common: dict[str, Any] = dict(loader=FileSystemLoader(directory), undefined=StrictUndefined,
                                  trim_blocks=True, lstrip_blocks=True)
    return (SandboxedEnvironment(autoescape=False, **common),
            SandboxedEnvironment(autoescape=True, **common))




def _blocks(value: str) -> Iterator[list[str]]:
    """Paragraphs of `value` (split at blank lines), each a list of stripped lines."""
    block: list[str] = []
    for line in value.splitlines():
        stripped = line.strip()
        if stripped:
            block.append(stripped)
        elif block:
            yield block
            block = []
    if block:
        yield block


def _kept_line(line: str) -> str:
    return line[1:].removeprefix(" ") if line.startswith("|") else line


def _list_items(lines: Iterable[str]) -> list[str]:
    items: list[str] = []
    for line in lines:
        if line.startswith("- ") or not items:
            items.append(line.removeprefix("- "))
        else:
            items[-1] += " " + line
    return items


# Spaces a line must not break at: after a one-letter word (Czech typography: "a", "v",
# "k" never end a line), inside numbers such as "1234 5678" and dates such as "25. 11. 2026".
_NO_BREAK = re.compile(r"(?<=\b[aikosuvzAIKOSUVZ]) |(?<=\d) (?=\d)|(?<=\d\.) (?=\d)")


@lru_cache(maxsize=1024)  # most paragraphs are template wording, the same in every reply
def _fill(text: str, initial: str = "", subsequent: str = "") -> str:
    glued = _NO_BREAK.sub("\u00a0", text)  # textwrap does not break at U+00A0
    wrapped = textwrap.fill(
        glued,
        width=TEXT_WIDTH,
        initial_indent=initial,
        subsequent_indent=subsequent,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return wrapped.replace("\u00a0", " ")


def text_paragraphs(value: str) -> str:
    """Jinja filter (text): flow and wrap paragraphs; "- " lists; "| " lines kept."""
    out: list[str] = []
    for lines in _blocks(str(value)):
        if lines[0].startswith("|"):
            out.append("\n".join(_kept_line(line) for line in lines))
        elif lines[0].startswith("- "):
            out.append("\n".join(_fill(item, "- ", "  ") for item in _list_items(lines)))
        else:
            out.append(_fill(" ".join(lines)))
    return "\n\n".join(out) + "\n"


def html_paragraphs(value: str) -> Markup:
    """Jinja filter (HTML): the same markup as <p>, <ul> and <br>; input is escaped Markup."""
    safe = escape(value)  # Markup passes through; a plain str would be escaped here
    out: list[Markup] = []
    for lines in _blocks(str(safe)):
        # Each line is a slice of already-escaped Markup, so wrapping it in Markup is sound.
        if lines[0].startswith("|"):
            body = Markup("<br>\n").join(Markup(_kept_line(line)) for line in lines)
            out.append(Markup("<p>{}</p>").format(body))
        elif lines[0].startswith("- "):
            items = Markup("").join(
                Markup("<li>{}</li>\n").format(Markup(item)) for item in _list_items(lines)
            )
            out.append(Markup("<ul>\n{}</ul>").format(items))
        else:
            out.append(Markup("<p>{}</p>").format(Markup(" ".join(lines))))
    return Markup("\n").join(out)
