"""The Jinja2 environments of mailbot's templates and the paragraph markup of the reply
layouts (pure).

Customer text is only ever template *data*; nothing from a mail is compiled as a template.
The HTML environment autoescapes, both are sandboxed and use StrictUndefined. Templates are
read once: the renderers check them all at start, and an edited template takes effect at the
next start (after that check). Compiled templates are kept in Jinja's bytecode cache, so a
process that starts after another has compiled them loads them instead (`TemplateCache`).
"""

from __future__ import annotations

import logging
import re
import textwrap
from bisect import bisect_right
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import suppress
from functools import lru_cache
from itertools import accumulate
from pathlib import Path
from types import BuiltinMethodType, MethodType
from typing import Any, Final

from jinja2 import Environment, FileSystemBytecodeCache, FileSystemLoader, StrictUndefined
from jinja2.bccache import Bucket
from jinja2.environment import TemplateModule
from jinja2.runtime import Context, LoopContext, Macro
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape

__all__ = ["html_paragraphs", "template_environments", "text_paragraphs"]

TEXT_WIDTH: Final = 76
_PLAIN_TYPES: Final = (TemplateModule, LoopContext)
_METHODS: Final = (MethodType, BuiltinMethodType)
_MISSING: Final = object()

log = logging.getLogger(__name__)


class _Sandbox(SandboxedEnvironment):
    """The stock sandbox, with shorter ways for what every reply does a dozen times: take a
    macro from the imported wording module (``t.ack``) or a value of a loop (``loop.last``),
    and call a macro.

    A public attribute of a `TemplateModule` (one of the template's own exports) or of a
    `LoopContext` that is not a method is what the stock `getattr` returns after checks that
    cannot fail for it (not a ``str.format`` method to wrap, not an internal attribute of a
    function, frame or the like); names starting with "_" and methods still take the stock
    path. A macro is
    always safely callable (it has neither `unsafe_callable` nor `alters_data`) and takes
    no context argument, so the shortcut in `call` is what `SandboxedEnvironment.call` and
    `Context.call` do for it, minus their checks."""

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        """A template's globals as a plain dict, not a ChainMap over the environment's:
        they are fixed once the environment is made (as Jinja asks), and every render
        copies them."""
        return {**self.globals, **(d or {})}

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) in _PLAIN_TYPES and not attribute.startswith("_"):
            value = getattr(obj, attribute, _MISSING)
            if value is not _MISSING and not isinstance(value, _METHODS):
                return value
        return super().getattr(obj, attribute)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if type(__obj) is not Macro:
            return super().call(__context, __obj, *args, **kwargs)
        kwargs.pop("_block_vars", None)
        kwargs.pop("_loop_vars", None)
        try:
            return __obj(*args, **kwargs)
        except StopIteration:
            return __context.environment.undefined(
                "value was undefined because a callable raised a StopIteration exception")


class TemplateCache(FileSystemBytecodeCache):
    """Jinja's bytecode cache in its private per-user temporary directory (mode 0700, owner
    checked; systemd's PrivateTmp gives the service its own): each process of mailbot (the
    daemon, its decision processes, each CLI command) would otherwise compile the ~50
    templates itself, ~0.1 s of CPU a process. A cached template is used only for the same
    source (Jinja checks its checksum) in an environment of the same settings: the key holds
    them besides the template's path, because the text and the HTML environment compile the
    same file differently. A cache that cannot be written is no error: the template is
    compiled as without one."""

    def get_bucket(self, environment: Environment, name: str, filename: str | None,
                   source: str) -> Bucket:
        settings = (type(environment).__qualname__, environment.autoescape,
                    environment.trim_blocks, environment.lstrip_blocks,
                    environment.keep_trailing_newline, environment.newline_sequence,
                    environment.optimized, environment.is_async, sorted(environment.filters),
                    sorted(environment.tests), sorted(environment.extensions))
        bucket = Bucket(environment, self.get_cache_key(f"{name}|{settings!r}", filename),
                        self.get_source_checksum(source))
        self.load_bytecode(bucket)
        return bucket

    def dump_bytecode(self, bucket: Bucket) -> None:
        with suppress(OSError):
            super().dump_bytecode(bucket)


@lru_cache(maxsize=1)
def template_cache() -> TemplateCache | None:
    """The process's `TemplateCache`, or None where no private temporary directory can be
    made (templates are then compiled in every process)."""
    try:
        return TemplateCache(pattern="mailbot-%s.cache")
    except (OSError, RuntimeError) as exc:
        log.info("templates are compiled in every process: no cache directory (%s)", exc)
        return None


def template_environments(directory: Path) -> tuple[SandboxedEnvironment, SandboxedEnvironment]:
    """The sandboxed Jinja2 environments for text (no escaping) and HTML (autoescaped) of the
    templates under `directory`; undefined names are errors. A template is loaded once and
    kept (no file check on every use, no LRU bookkeeping: the directory holds a few dozen)."""
    common: dict[str, Any] = dict(loader=FileSystemLoader(directory), undefined=StrictUndefined,
                                  trim_blocks=True, lstrip_blocks=True, auto_reload=False,
                                  cache_size=-1, bytecode_cache=template_cache())
    return _Sandbox(autoescape=False, **common), _Sandbox(autoescape=True, **common)




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
# (The space first: the regex engine then jumps from space to space.)
_NO_BREAK = re.compile(r" (?:(?<=\b[aikosuvzAIKOSUVZ] )|(?<=\d )(?=\d)|(?<=\d\. )(?=\d))")


def _simple(text: str) -> bool:
    """Whether `_greedy` wraps `text` as textwrap does: words separated by single spaces and
    no other whitespace than U+00A0 inside words. Other whitespace textwrap would turn into
    spaces (tabs to columns) or drop as a word of its own at a line's start or end; it is
    not printable, like the control and format characters also left to textwrap here."""
    return (bool(text) and text[0] not in " \u00a0" and text[-1] not in " \u00a0"
            and "  " not in text and " \u00a0" not in text and "\u00a0 " not in text
            and text.replace("\u00a0", "").isprintable())


def _greedy(words: list[str], initial: str, subsequent: str) -> str:
    """`textwrap.fill` of the words (none of them whitespace only) at TEXT_WIDTH (no long
    word broken, no break at a hyphen): each line takes as many words as fit, at least one.
    With ``ends[i]`` the length of the first i words plus a space each, words i..j-1 make a
    line of ``ends[j] - ends[i] - 1`` characters, so the end of each line is one bisection."""
    ends = list(accumulate([len(word) + 1 for word in words], initial=0))
    lines: list[str] = []
    first = 0
    width = TEXT_WIDTH - len(initial)
    while first < len(words):
        last = max(bisect_right(ends, ends[first] + width + 1, first + 1) - 1, first + 1)
        lines.append((subsequent if lines else initial) + " ".join(words[first:last]))
        first = last
        width = TEXT_WIDTH - len(subsequent)
    return "\n".join(lines)


@lru_cache(maxsize=1024)  # most paragraphs are template wording, the same in every reply
def _fill(text: str, initial: str = "", subsequent: str = "") -> str:
    glued = _NO_BREAK.sub("\u00a0", text)  # textwrap does not break at U+00A0
    if _simple(glued):
        return _greedy(glued.split(" "), initial, subsequent).replace("\u00a0", " ")
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
    out: list[str] = []
    # Each line is a slice of the escaped text and the tags are constant, so the joined
    # result is sound Markup.
    for lines in _blocks(str(safe)):
        if lines[0].startswith("|"):
            out.append("<p>" + "<br>\n".join(_kept_line(line) for line in lines) + "</p>")
        elif lines[0].startswith("- "):
            items = "".join(f"<li>{item}</li>\n" for item in _list_items(lines))
            out.append(f"<ul>\n{items}</ul>")
        else:
            out.append("<p>" + " ".join(lines) + "</p>")
    return Markup("\n".join(out))
