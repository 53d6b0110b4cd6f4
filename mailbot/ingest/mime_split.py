"""The stdlib's MIME parser (``email.feedparser``) without its one per-message regex compile.

For every multipart part the feedparser compiles a regular expression for the part's
boundary line, ``(?P<sep>--BOUNDARY)(?P<end>--)?(?P<ws>[ \\t]*)(?P<linesep>\\r\\n|\\r|\\n)?$``.
Boundaries are random, so `re`'s cache never hits, and each compile costs ~0.6 ms (a third
of parsing a typical multipart mail). `parse_text` runs a private copy of the stdlib's
module, loaded from the stdlib's own file, whose ``re.compile`` returns `BoundaryLine` for
exactly that pattern: the same match, found with ``str.startswith`` and a few comparisons.
Every other pattern, and that one should a later Python word it differently, is compiled by
`re` as before, so the tree is the stdlib's in every case.
"""

from __future__ import annotations

import importlib.util
import re
from email.message import Message
from email.policy import Policy
from types import ModuleType
from typing import Any

__all__ = ["BoundaryLine", "parse_text"]

_PREFIX = "(?P<sep>"
_SUFFIX = r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


class BoundaryMatch:
    """What the feedparser reads of a boundary line's match: its named groups."""

    __slots__ = ("_groups",)

    def __init__(self, sep: str, end: str | None, ws: str, linesep: str | None) -> None:
        self._groups = {"sep": sep, "end": end, "ws": ws, "linesep": linesep}

    def group(self, name: str | int = 0) -> str | None:
        if name == 0:
            return "".join(v for v in self._groups.values() if v)
        return self._groups[str(name)]


class BoundaryLine:
    """The compiled boundary pattern of one separator (``--`` and the boundary): ``match``
    is ``re.match`` of that pattern (a line starting with the separator, then an optional
    ``--``, blanks and tabs, and at most one line end; ``$`` also allows one more ``\\n``)."""

    __slots__ = ("separator",)

    def __init__(self, separator: str) -> None:
        self.separator = separator

    def match(self, line: str) -> BoundaryMatch | None:
        if not line.startswith(self.separator):
            return None
        pos = len(self.separator)
        end = None
        if line.startswith("--", pos):
            end, pos = "--", pos + 2
        start = pos
        size = len(line)
        while pos < size and line[pos] in " \t":
            pos += 1
        ws = line[start:pos]
        linesep = None
        for candidate in ("\r\n", "\r", "\n"):
            if line.startswith(candidate, pos):
                linesep, pos = candidate, pos + len(candidate)
                break
        rest = line[pos:]
        # `$`: at the end, or before a last "\n". No other way through the pattern can
        # match: a shorter run of blanks leaves a blank, no "--" leaves a "-" before `$`.
        if rest not in ("", "\n"):
            return None
        return BoundaryMatch(self.separator, end, ws, linesep)


class _Re:
    """The `re` the private feedparser sees: `re` itself, except for boundary patterns."""

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)

    @staticmethod
    def compile(pattern: Any, flags: int = 0) -> Any:
        if (flags == 0 and isinstance(pattern, str) and pattern.startswith(_PREFIX)
                and pattern.endswith(_SUFFIX)):
            escaped = pattern[len(_PREFIX):-len(_SUFFIX)]
            separator = _ESCAPED.sub(r"\1", escaped)
            if re.escape(separator) == escaped:  # exactly the pattern of this separator
                return BoundaryLine(separator)
        return re.compile(pattern, flags)


def _private_feedparser() -> ModuleType:
    spec = importlib.util.find_spec("email.feedparser")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)  # not put in sys.modules: ours alone
    spec.loader.exec_module(module)
    module.re = _Re()  # type: ignore[attr-defined]  # after its module-level compiles
    return module


_FEEDPARSER = _private_feedparser()


def parse_text(text: str, policy: Policy) -> Message:
    """``email.parser.Parser(policy=policy).parsestr(text)``: the same tree."""
    parser = _FEEDPARSER.FeedParser(policy=policy)
    parser.feed(text)
    result: Message = parser.close()
    return result
