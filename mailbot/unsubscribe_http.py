"""The RFC 8058 one-click unsubscribe endpoint: a tiny, strict HTTP/1.1 server on asyncio.

News mail carries ``List-Unsubscribe: <mailto:…>, <{news.base_url}/unsubscribe/TOKEN>`` and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``; a mail client unsubscribes with a
POST to that URL. This server answers it, in plain HTTP on loopback (`news.http_host`,
`news.http_port`): HTTPS belongs to the reverse proxy in front, which serves `base_url` and
forwards its ``/unsubscribe/`` path here (with base_url's path prefix or without it).

Routes (the token: 20 lower-case hex characters, see `mailbot.unsubscribe_token`):

* ``POST /unsubscribe/TOKEN`` with the body ``List-Unsubscribe=One-Click`` (form-urlencoded
  or multipart/form-data, RFC 8058 §3.1) or an empty body: the token's address is
  unsubscribed (again: nothing more happens), 200 text/plain. No redirect, no cookie.
* ``GET /unsubscribe/TOKEN``: 200, a small page whose button makes that POST. A GET never
  unsubscribes: link scanners and previews follow links.
* An unknown or malformed token: 404, nothing changes. Another method: 405 (``Allow: GET,
  POST``); another path: 404; a malformed request: 400; the store away: 503.

Bounded: request line and headers at most 8 KiB, a body at most 1 KiB, 10 s for the whole
exchange, one request per connection (``Connection: close``), 64 connections at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.parser import BytesParser
from email.utils import formatdate
from html import escape
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from mailbot.config import Config
from mailbot.store import Store, utcnow
from mailbot.unsubscribe_token import is_token

log = logging.getLogger(__name__)

MAX_HEAD = 8 * 1024
MAX_BODY = 1024
TIMEOUT_SECONDS = 10.0
MAX_CONNECTIONS = 64

_TCHARS = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: methods, field names
_TARGET = re.compile(r"[\x21-\x7e]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_VERSION = re.compile(r"HTTP/(\d)\.(\d)")
_SINGLE = ("content-length", "transfer-encoding", "host", "content-type")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {HTTPStatus(self.status).phrase}",
                 f"Date: {formatdate(usegmt=True)}",
                 f"Content-Type: {self.content_type}",
                 f"Content-Length: {len(self.body)}",
                 "Connection: close",
                 "Cache-Control: no-store",
                 "X-Content-Type-Options: nosniff",
                 "Referrer-Policy: no-referrer",
                 "X-Robots-Tag: noindex",
                 *(f"{name}: {value}" for name, value in self.headers)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


def _text(status: int, text: str, *headers: tuple[str, str]) -> Response:
    return Response(status, (text + "\n").encode("utf-8"), headers=headers)


class _Reject(Exception):
    """A request answered with an error status, without going further."""

    def __init__(self, status: int, text: str, *headers: tuple[str, str]) -> None:
        super().__init__(text)
        self.response = _text(status, text, *headers)


def _bad(detail: str) -> _Reject:
    log.debug("unsubscribe endpoint: bad request: %s", detail)
    return _Reject(400, "Chybný požadavek / Bad request")


NOT_FOUND = "Neplatný odkaz / Not found"
DONE = "Odhlášeno / Unsubscribed"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One request from `reader` (its limit bounds the head), or None when the client
    closed the connection before sending a whole head.

    Raises:
        _Reject: malformed (400), too large (431, 413), or a body we do not read (411).
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        raise _Reject(431, "Hlavička je příliš dlouhá / Request header too large") from None
    if len(head) > MAX_HEAD:
        raise _Reject(431, "Hlavička je příliš dlouhá / Request header too large")
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise _bad("request line")
    method, target, version = parts
    m = _VERSION.fullmatch(version)
    if not _TCHARS.fullmatch(method) or not _TARGET.fullmatch(target) or m is None:
        raise _bad("request line")
    if m.group(1) != "1":
        raise _Reject(505, "HTTP/1.1 only")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        # No folded lines, no space before the colon, no control characters (a bare CR or
        # LF included).
        if not colon or not _TCHARS.fullmatch(name):
            raise _bad("header field name")
        value = value.strip(" \t")
        if not _FIELD_VALUE.fullmatch(value):
            raise _bad("header field value")
        key = name.lower()
        if key in headers:
            if key in _SINGLE:
                raise _bad(f"{key} repeated")
            headers[key] += ", " + value
        else:
            headers[key] = value
    if version == "HTTP/1.1" and "host" not in headers:
        raise _bad("no Host")
    if "transfer-encoding" in headers:
        if "content-length" in headers:
            raise _bad("Transfer-Encoding and Content-Length")
        raise _Reject(411, "Content-Length required")
    length = headers.get("content-length", "0")
    if not re.fullmatch(r"\d{1,10}", length):
        raise _bad("Content-Length")
    if int(length) > MAX_BODY:
        raise _Reject(413, "Příliš velké / Content too large")
    try:
        body = await reader.readexactly(int(length))
    except asyncio.IncompleteReadError:
        return None
    if target.startswith(("http://", "https://")):  # absolute-form (RFC 9112 §3.2.2)
        path = urlsplit(target).path or "/"
    elif target.startswith("/"):
        path = target.partition("?")[0]
    else:
        raise _bad("request target")
    return Request(method, path, headers, body)


def is_one_click(content_type: str | None, body: bytes) -> bool:
    """Whether a POST body asks for the one-click unsubscribe (RFC 8058 §3.1): the pair
    ``List-Unsubscribe=One-Click`` form-urlencoded or as multipart/form-data; an empty body
    too (some clients send none)."""
    if not body.strip():
        return True
    if body.strip() == b"List-Unsubscribe=One-Click":
        return True
    mime = (content_type or "").partition(";")[0].strip().lower()
    if mime == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            return False
        return any(k == "List-Unsubscribe" and v.strip().lower() == "one-click"
                   for k, v in pairs)
    if mime == "multipart/form-data" and content_type is not None:
        msg = BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
        if not msg.is_multipart():
            return False
        for part in msg.iter_parts():
            if part.get_param("name", header="content-disposition") != "List-Unsubscribe":
                continue
            value = part.get_payload(decode=True)
            if isinstance(value, bytes) and value.strip().lower() == b"one-click":
                return True
    return False


_PAGE = """<!DOCTYPE html>
<html lang="cs">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Odhlášení odběru / Unsubscribe</title>
</head>
<body>
<h1>Odhlášení odběru novinek</h1>
<p>Potvrďte prosím, že už nechcete dostávat {name}.</p>
<p lang="en">Please confirm that you no longer want to receive {name}.</p>
<form method="post" action="{action}">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Odhlásit / Unsubscribe</button>
</form>
</body>
</html>
"""
_PAGE_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                "frame-ancestors 'none'; base-uri 'none'")


class UnsubscribeServer:
    """The endpoint, served on the running event loop. `start()`, then `close()`."""

    def __init__(self, store: Store, host: str, port: int, *, base_url: str | None = None,
                 list_name: str = "novinky", clock: Callable[[], datetime] = utcnow,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        self._store = store
        self._host, self._port = host, port
        prefix = urlsplit(base_url).path.rstrip("/") if base_url else ""
        # The proxy may forward the path as the client sent it or with the prefix stripped.
        self._route = re.compile(rf"(?:{re.escape(prefix)})?/unsubscribe/([^/]*)")
        self._list_name = list_name
        self._clock = clock
        self._timeout = timeout
        self._server: asyncio.Server | None = None
        self._active: set[asyncio.Task[Any]] = set()
        self._closing = False

    @classmethod
    def from_config(cls, config: Config, store: Store) -> UnsubscribeServer:
        news = config.news
        return cls(store, news.http_host, news.http_port, base_url=news.base_url,
                   list_name=news.from_name)

    async def start(self) -> None:
        """Bind and serve; raises what binding raised (e.g. the port is taken)."""
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=MAX_HEAD)
        log.info("one-click unsubscribe endpoint on http://%s:%s/unsubscribe/",
                 self._host, self.port)

    @property
    def port(self) -> int | None:
        if self._server is None or not self._server.sockets:
            return None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self, grace: float = 5.0) -> None:
        """Stop listening; requests in progress get `grace` seconds, then are cut off."""
        server, self._server = self._server, None
        self._closing = True
        if server is None:
            return
        server.close()
        pending = set(self._active)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._closing or task is None or len(self._active) >= MAX_CONNECTIONS:
            writer.write(_text(503, "Zkuste to později / Try again later",
                               ("Retry-After", "10")).encode())
            await _finish(writer)
            return
        self._active.add(task)
        sent = False
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._answer(reader)
                if response is not None:
                    sent = True
                    writer.write(response.encode())
                    await writer.drain()
        except TimeoutError:
            if not sent:
                writer.write(_text(408, "Request timeout").encode())
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # Cut off by close(): end quietly (the stream protocol would log a cancelled task
            # as an error). Nothing waits for this task but close().
            pass
        finally:
            self._active.discard(task)
            await _finish(writer)

    async def _answer(self, reader: asyncio.StreamReader) -> Response | None:
        try:
            request = await read_request(reader)
            if request is None:
                return None
            return await self._route_request(request)
        except _Reject as reject:
            return reject.response

    async def _route_request(self, request: Request) -> Response:
        m = self._route.fullmatch(request.path)
        if m is None:
            return _text(404, NOT_FOUND)
        if request.method == "HEAD":  # an answer to HEAD has no body
            return Response(405, headers=(("Allow", "GET, POST"),))
        if request.method not in ("GET", "POST"):
            return _text(405, "Použijte GET nebo POST / Method not allowed",
                         ("Allow", "GET, POST"))
        token = m.group(1)
        if not is_token(token):
            return _text(404, NOT_FOUND)
        if request.method == "POST" and not is_one_click(request.headers.get("content-type"),
                                                         request.body):
            raise _bad("POST body is not List-Unsubscribe=One-Click")
        try:
            if request.method == "GET":
                known = await asyncio.to_thread(self._known, token)
                if not known:
                    return _text(404, NOT_FOUND)
                page = _PAGE.format(name=escape(self._list_name), action=escape(token))
                return Response(200, page.encode("utf-8"), "text/html; charset=utf-8",
                                (("Content-Security-Policy", _PAGE_POLICY),))
            address = await asyncio.to_thread(self._store.unsubscribe_by_token, token,
                                              self._clock())
        except Exception:  # noqa: BLE001 - the store is away: the client may try again
            log.exception("one-click unsubscribe failed")
            return _text(503, "Zkuste to později / Try again later", ("Retry-After", "60"))
        if address is None:
            return _text(404, NOT_FOUND)
        log.info("unsubscribed %s (one-click POST)", address)
        return _text(200, DONE)

    def _known(self, token: str) -> bool:
        """A GET only reads: it never takes (or waits for) the database's write lock."""
        return self._store.news_token_known(token)


async def _finish(writer: asyncio.StreamWriter) -> None:
    """Close the connection, flushing what was written; a client that does not read gets
    the connection aborted after 2 s."""
    writer.close()
    try:
        async with asyncio.timeout(2.0):
            await writer.wait_closed()
    except (TimeoutError, ConnectionError, OSError):
        writer.transport.abort()
