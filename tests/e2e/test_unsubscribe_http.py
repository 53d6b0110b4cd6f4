"""Unsubscribing from news end to end, with the daemon running: by the RFC 8058 one-click POST
to its HTTP endpoint (a GET never unsubscribes: link scanners), and by mail to the
List-Unsubscribe mailto address over SMTP."""

from __future__ import annotations

import asyncio
import email.policy
import http.client
import smtplib
import socket
from datetime import date
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from urllib.parse import urlsplit

from mailbot.migrations import open_store
from mailbot.config import Config
from mailbot.contacts import Contact
from mailbot.domain import LicenseRecord, Tier
from mailbot.news import load_campaign, queue_campaign
from mailbot.store import Store, utcnow
from mailbot.unsubscribe_http import UnsubscribeServer, is_one_click
from tests.e2e.helpers import daemon_config, eventually, running

_PARSE = BytesParser(policy=email.policy.default)
LICENSES = [
    LicenseRecord("11112222", "Firma a.s.", "firma.cz", date(2024, 1, 1), Tier.HOTLINE, None),
    LicenseRecord("33334444", "Druha s.r.o.", "druha.cz", date(2024, 1, 1), Tier.HOTLINE, None),
]
CONTACTS = [
    Contact("grant@firma.cz", "11112222", "Ann Grant", "en"),
    Contact("novak@firma.cz", "11112222", "Jan Novák", "cs"),
    Contact("pokorna@druha.cz", "33334444", "Eva Pokorná", "cs"),
    Contact("stays@druha.cz", "33334444", "Stays Subscribed", "cs"),
]
ONE_CLICK = "List-Unsubscribe=One-Click"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def news_config(base_config: Config, sink_port: int, tmp_path: Path) -> Config:
    news = tmp_path / "news"
    news.mkdir()
    (news / "v53.md").write_text(
        '+++\nsubject_cs = "Nová verze"\nsubject_en = "New version"\naudience = "supported"\n'
        "+++\nDobrý den {{ name }}.\n<!-- en -->\nHello {{ name }}.\n", encoding="utf-8")
    (news / "v54.md").write_text('+++\nsubject_cs = "Další"\n+++\nText.\n', encoding="utf-8")
    cfg = daemon_config(base_config, sink_port)
    cfg = cfg.model_copy(update={"news": cfg.news.model_copy(update={
        "directory": str(news), "base_url": "https://estelar.example/news",
        "http_enabled": True, "http_port": 0})})
    store = open_store(cfg)
    store.upsert_licenses(LICENSES)
    store.upsert_contacts(CONTACTS)
    store.close()
    return cfg


def queue(store: Store, cfg: Config, name: str) -> int:
    return queue_campaign(store, cfg, load_campaign(cfg.path(cfg.news.directory), name), utcnow())


def links(store: Store) -> dict[str, tuple[str, str]]:
    """Per recipient of the queued news mail: (mailto address, one-click URL)."""
    found = {}
    for row in store.list_outbox(limit=100):
        if row.kind != "news":
            continue
        msg = _PARSE.parsebytes(row.raw)
        assert msg["List-Unsubscribe-Post"] == ONE_CLICK
        mailto, url = [part.strip(" <>") for part in str(msg["List-Unsubscribe"]).split(",")]
        assert mailto.startswith("mailto:") and url.startswith("https://estelar.example/news/")
        found[row.rcpt_to[0]] = (mailto.removeprefix("mailto:"), url)
    return found


def call(port: int, method: str, path: str, body: bytes | str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def suppressed(store: Store) -> set[str]:
    return {a for a, _, _ in store.suppressed()}


async def test_one_click_post_unsubscribes_and_get_does_not(
        base_config: Config, smtp_sink, tmp_path: Path) -> None:
    cfg = news_config(base_config, smtp_sink.port, tmp_path)
    async with running(cfg) as daemon:
        store, port = daemon.store, daemon.http_port
        assert port
        assert await asyncio.to_thread(queue, store, cfg, "v53") == 4
        urls = {to: urlsplit(url).path for to, (_, url) in links(store).items()}
        path = urls["grant@firma.cz"]
        token = path.rsplit("/", 1)[1]
        assert path == f"/news/unsubscribe/{token}" and len(token) == 20

        async def req(method: str, path: str, body: bytes | str | None = None,
                      headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
            return await asyncio.to_thread(call, port, method, path, body, headers)

        # GET (a link scanner, a preview, a person): a page with a button, nothing changes.
        for p in (path, f"/unsubscribe/{token}"):  # the proxy may strip base_url's prefix
            status, headers, body = await req("GET", p)
            assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
            assert headers["connection"] == "close" and "set-cookie" not in headers
            page = body.decode("utf-8")
            assert '<form method="post"' in page and f'action="{token}"' in page
            assert 'name="List-Unsubscribe" value="One-Click"' in page
            assert page.count(token) == 1 and "grant@" not in page
        assert suppressed(store) == set()

        # Other methods, paths, tokens: 405, 404; nothing changes.
        for method in ("PUT", "DELETE", "HEAD"):
            status, headers, _ = await req(method, path)
            assert status == 405 and headers["allow"] == "GET, POST"
        tampered = path[:-1] + ("0" if path[-1] != "0" else "1")
        for p in (tampered, "/news/unsubscribe/" + token.upper(), "/news/unsubscribe/x' or 1",
                  "/news/unsubscribe/", "/", f"/other/{token}", path + "/"):
            status, _, _ = await req("POST", p.replace(" ", "%20"), ONE_CLICK, FORM)
            assert status == 404, p
        status, _, _ = await req("GET", tampered)
        assert status == 404
        status, _, _ = await req("POST", urls["stays@druha.cz"], "something=else", FORM)
        assert status == 400
        assert suppressed(store) == set()

        # The RFC 8058 POST: 200, no redirect; again: 200, still once.
        for _ in range(2):
            status, headers, body = await req("POST", path, ONE_CLICK, FORM)
            assert status == 200 and body.decode("utf-8") == "Odhlášeno / Unsubscribed\n"
            assert headers["content-type"].startswith("text/plain") and "location" not in headers
            assert suppressed(store) == {"grant@firma.cz"}
        # multipart/form-data (RFC 8058's SHOULD) and an empty body are one-click too.
        multipart = ('--b0undary\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n'
                     "\r\nOne-Click\r\n--b0undary--\r\n")
        status, _, _ = await req("POST", urls["novak@firma.cz"], multipart,
                                 {"Content-Type": "multipart/form-data; boundary=b0undary"})
        assert status == 200
        status, _, _ = await req("POST", f"/unsubscribe/{urls['pokorna@druha.cz'].rsplit('/', 1)[1]}")
        assert status == 200
        assert suppressed(store) == {"grant@firma.cz", "novak@firma.cz", "pokorna@druha.cz"}

        # Malformed requests: 400; too large: 431, 413.
        for data, code in ((b"GARBAGE\r\n\r\n", b"400"),
                           (b"GET /unsubscribe/x HTTP/1.1\r\n\r\n", b"400"),  # no Host
                           (f"POST {path} HTTP/1.1\r\nHost: x\r\n folded: y\r\n\r\n".encode(), b"400"),
                           (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                            "Content-Length: 2\r\n\r\nab".encode(), b"400"),
                           (f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                            "\r\n0\r\n\r\n".encode(), b"411"),
                           (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000 + b"\r\n\r\n", b"431"),
                           (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
                            .encode(), b"413")):
            answer = await asyncio.to_thread(raw_exchange, port, data)
            assert answer.startswith(b"HTTP/1.1 " + code + b" "), (data[:60], answer[:60])
            assert b"\r\nConnection: close\r\n" in answer

        # A later campaign skips who unsubscribed.
        assert await asyncio.to_thread(queue, store, cfg, "v54") == 1
        assert [r.rcpt_to for r in store.list_outbox(limit=100)
                if r.purpose.startswith("news:v54:")] == [["stays@druha.cz"]]
    assert daemon.http_port is None  # stopped with the daemon


async def test_unsubscribe_by_mail_over_the_wire(base_config: Config, smtp_sink,
                                                 tmp_path: Path) -> None:
    """The List-Unsubscribe mailto, answered from another address over SMTP, unsubscribes
    the recipient the token names (and that sender)."""
    cfg = news_config(base_config, smtp_sink.port, tmp_path)
    async with running(cfg) as daemon:
        store = daemon.store
        assert await asyncio.to_thread(queue, store, cfg, "v53") == 4
        mailto, _ = links(store)["grant@firma.cz"]
        assert mailto.startswith("novinky-odhlaseni+")
        request = EmailMessage()
        request["From"] = "Sekretariat <sekretariat@firma.cz>"
        request["To"] = mailto
        request["Subject"] = "unsubscribe"
        request["Message-ID"] = "<unsub-1@firma.cz>"
        request.set_content("")

        def send() -> None:
            with smtplib.SMTP("127.0.0.1", daemon.listen_port) as c:
                c.sendmail("sekretariat@firma.cz", [mailto],
                           request.as_bytes(policy=email.policy.SMTP))

        await asyncio.to_thread(send)
        await eventually(lambda: store.count_inbound() == {"decided": 1})
        assert suppressed(store) == {"grant@firma.cz", "sekretariat@firma.cz"}
        assert await asyncio.to_thread(queue, store, cfg, "v54") == 3


def test_one_click_body_forms() -> None:
    assert is_one_click(None, b"") and is_one_click("text/plain", b"List-Unsubscribe=One-Click")
    assert is_one_click("application/x-www-form-urlencoded", b"List-Unsubscribe=One-Click")
    assert is_one_click("application/x-www-form-urlencoded; charset=utf-8",
                        b"a=b&List-Unsubscribe=one-click")
    assert not is_one_click("application/x-www-form-urlencoded", b"List-Unsubscribe=No")
    assert not is_one_click("application/x-www-form-urlencoded", b"%%%&&&=")
    assert not is_one_click("multipart/form-data; boundary=z", b"--z\r\nnot a part")
    assert not is_one_click("application/json", b'{"List-Unsubscribe": "One-Click"}')


async def test_slow_client_times_out_and_close_ends_connections(base_config: Config) -> None:
    """A client that sends half a request gets 408 after the timeout; `close()` ends the
    connections still open and the port stops answering."""
    store = open_store(base_config)
    server = UnsubscribeServer(store, "127.0.0.1", 0, timeout=0.5)
    await server.start()
    port = server.port
    assert port
    try:
        answer = await asyncio.to_thread(raw_exchange, port, b"GET /unsubscribe/")
        assert answer.startswith(b"HTTP/1.1 408 ")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /unsubscribe/")
        await asyncio.sleep(0.1)
        await server.close(grace=0.1)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, no answer
        writer.close()
        try:
            await asyncio.open_connection("127.0.0.1", port)
            raise AssertionError("still listening")
        except OSError:
            pass
    finally:
        await server.close()
        store.close()
