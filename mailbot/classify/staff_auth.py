"""Whether a mail that claims to come from staff really does (pure).

A From header proves nothing. A staff reply is trusted on one of two grounds:

1. **Authentication-Results** (RFC 8601) stamped by our own border MTA, read from the raw
   header value (never RFC 2047-decoded: the sender controls the envelope sender and the
   DKIM ``d=`` our MTA copies into it). The *topmost* A-R header must carry one of the
   configured authserv-ids (an MTA prepends its header, so anything above ours was added
   after it and anything below may be forged by the sender), and a ``method=result`` of it
   (never a comment, quoted string or property value) must report ``dkim=pass`` with
   ``header.d`` equal to the From domain or its organizational domain (Public Suffix List),
   or ``dmarc=pass`` with ``header.from`` equal to the From domain. SPF alone is not enough:
   a shared provider's SPF record passes for all of its customers.
2. **A per-ticket reply address** that only our staff notices carry:
   ``podpora+T-2026-000123.<token>@estelar.example``, where the token is an expiry day and
   an HMAC-SHA256 of ticket and expiry under a secret (or the previous secret, while a
   rotation lasts). Knowing the ticket number is not enough to forge it. A token is bound
   to its ticket, counts only from a staff address, not when the mail also goes to an
   outside address, and not when our MTA reports ``dmarc=fail`` for the From domain.

For customers (`sender_alignment`), the same trusted header tells whether the From domain
is authenticated (DKIM, DMARC, or SPF aligned with it) or fails.

Either way the From header itself must be unambiguous: one header, one mailbox, parsed the
same by the strict header registry and by the lenient parser that produced `Mail.from_addr`
(this defeats tricks such as ``alice@x(<staff@y>`` or two From addresses).
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from email.headerregistry import HeaderRegistry
from functools import lru_cache
from typing import Literal

from publicsuffixlist import PublicSuffixList

from mailbot.domain import Mail

_EPOCH = date(2000, 1, 1)
_MAC_CHARS = 16  # base32 characters: 80 bits of the HMAC
_TOKEN = re.compile(r"(T-\d{4}-\d{6})\.([0-9a-z]{4})([a-z2-7]{16})")
_REGISTRY = HeaderRegistry()


@dataclass(frozen=True, slots=True)
class StaffPolicy:
    """Who is staff and what proves it (built from the config; holds the token secret)."""

    staff_domains: frozenset[str]
    staff_addresses: frozenset[str]
    authserv_ids: frozenset[str]
    support_address: str
    token_secret: bytes
    verify: bool = True
    # Secrets of a rotation's grace period: their tokens are still accepted, never made.
    previous_secrets: tuple[bytes, ...] = ()

    def is_staff_address(self, address: str | None) -> bool:
        return is_staff_address(address, self.staff_domains, self.staff_addresses)

    def is_support_address(self, address: str) -> bool:
        """The support address itself or one of its `local+…@domain` reply addresses."""
        local, _, domain = address.lower().rpartition("@")
        base_local, _, base_domain = self.support_address.lower().rpartition("@")
        return domain == base_domain and (local == base_local
                                          or local.startswith(base_local + "+"))


def is_staff_address(address: str | None, domains: Iterable[str], addresses: Iterable[str]
                     ) -> bool:
    """Whether `address` is listed, or in one of the staff domains or their subdomains."""
    address = (address or "").lower()
    domain = address.rpartition("@")[2]
    return bool(domain) and (address in {a.lower() for a in addresses} or any(
        domain == d.lower() or domain.endswith("." + d.lower()) for d in domains))


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of checking a staff mail: trusted or not, and why."""

    trusted: bool
    reason: str


# --- reply tokens ----------------------------------------------------------------------------


def _b36(n: int, width: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    for _ in range(width):
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out


def _mac(secret: bytes, ticket: str, expiry: str) -> str:
    digest = hmac.new(secret, f"{ticket}.{expiry}".encode("ascii"), hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:_MAC_CHARS]


def reply_token(secret: bytes, ticket: str, expires: date) -> str:
    """The token of `ticket`'s reply address, valid until the end of day `expires`."""
    expiry = _b36((expires - _EPOCH).days, 4)
    return expiry + _mac(secret, ticket, expiry)


def reply_address(support_address: str, ticket: str, secret: bytes, expires: date) -> str:
    """The per-ticket reply address of a staff notice (Reply-To)."""
    local, _, domain = support_address.partition("@")
    return f"{local}+{ticket}.{reply_token(secret, ticket, expires)}@{domain}"


def token_ticket(address: str, support_address: str, secret: bytes, today: date,
                 previous: Iterable[bytes] = ()) -> Verdict:
    """Check a reply address against `secret` (or a `previous` one of a rotation); `reason`
    names the ticket when the token is valid."""
    local, _, domain = address.strip().strip("<>").lower().rpartition("@")
    base_local, _, base_domain = support_address.lower().rpartition("@")
    if domain != base_domain or not local.startswith(base_local + "+"):
        return Verdict(False, "not a reply address")
    # Ticket numbers are upper-case; the local part was lower-cased above.
    m = _TOKEN.fullmatch(re.sub(r"^t-", "T-", local[len(base_local) + 1 :]))
    if m is None:
        return Verdict(False, "malformed reply token")
    ticket, expiry, mac = m.groups()
    if not any(hmac.compare_digest(mac, _mac(key, ticket, expiry))
               for key in (secret, *previous) if key):
        return Verdict(False, f"reply token for {ticket} does not verify")
    if _EPOCH + timedelta(days=int(expiry, 36)) < today:
        return Verdict(False, f"reply token for {ticket} expired")
    return Verdict(True, ticket)


# --- From header -----------------------------------------------------------------------------


def single_from(mail: Mail) -> str | None:
    """The one From mailbox, when every parser agrees on it; else None."""
    values = mail.headers.get("from", ())
    if len(values) != 1 or not mail.from_addr:
        return None
    value = values[0]
    if _encoded_phrase(value, mail):
        # `Mail.headers` holds decoded text: an RFC 2047 display name such as
        # "=?utf-8?b?...?=" for "Dvořák, Jiří" decodes to specials (comma, quote, parenthesis)
        # that were one atom in the raw header. Check the quoted form of the same mailbox.
        value = email.utils.formataddr((mail.from_name, mail.from_addr), "utf-8")
    header = _REGISTRY("From", value)
    addresses = [a.addr_spec.lower() for a in getattr(header, "addresses", ())]
    lenient = [addr.lower() for _, addr in email.utils.getaddresses([value])]
    if header.defects or len(addresses) != 1 or lenient != addresses:
        return None
    sender: str = addresses[0]
    return sender if sender == mail.from_addr.lower() else None


def _encoded_phrase(value: str, mail: Mail) -> bool:
    """Whether the decoded From `value` is exactly `<display name> <from_addr>`, the display
    name being what the lenient parser read from the raw header as one phrase."""
    head, sep, tail = value.rpartition("<")
    return (bool(sep) and bool(mail.from_name) and head.strip() == mail.from_name
            and not any(c in head for c in "<>")
            and tail.lower() == f"{(mail.from_addr or '').lower()}>")


# --- Authentication-Results ------------------------------------------------------------------


_QUOTED_STRING = r'"(?:[^"\\]|\\.)*"?'  # an unterminated one runs to the end
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_AR_PIECES = re.compile(f"({_QUOTED_STRING})")
_AR_WORD = re.compile(f'[;=]|(?:{_QUOTED_STRING}|[^\\s";=])+')
_AR_DOT_SLASH = re.compile(r"\s*([./])\s*")  # CFWS may surround them: `dkim / 1`, `policy . x`
_DOMAIN = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")


def _strip_comments(value: str) -> str:
    """`value` with its comments replaced by a space; quoted strings are kept as they are."""
    out, depth, quoted, escaped = [], 0, False, False
    for ch in value:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(ch)
            continue
        if ch == "\\" and (quoted or depth):
            escaped = True
            if depth == 0:
                out.append(ch)
            continue
        if quoted or (ch == '"' and depth == 0):
            quoted = quoted != (ch == '"')
            out.append(ch)
        elif ch == "(":
            if depth == 0:
                out.append(" ")
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def _ar_words(value: str) -> list[str]:
    """The words of an A-R header: ";", "=", and values (a quoted string is one value)."""
    pieces = _AR_PIECES.split(_strip_comments(value))
    text = "".join(p if i % 2 else _AR_DOT_SLASH.sub(r"\1", p) for i, p in enumerate(pieces))
    return _AR_WORD.findall(text)


def _unquote(word: str) -> str:
    """A quoted-string's content; any other word as it is (e.g. `"a b"@example.com`)."""
    m = _QUOTED.fullmatch(word)
    return re.sub(r"\\(.)", r"\1", m.group(1)) if m else word


def parse_authentication_results(value: str) -> tuple[str, list[dict[str, str]]]:
    """The authserv-id and the result sets of one A-R header (RFC 8601, comments dropped).

    Each result set maps the method (e.g. "dkim", a "/1" version dropped) to its result and
    each property (e.g. "header.d") to its value, all lower-cased. Quoted strings are single
    values: a ";", "(" or space inside one (an SMTP local part may hold any) never starts a
    result set, a comment or a property; a property given twice keeps its first value.
    """
    sets: list[list[str]] = [[]]
    for word in _ar_words(value):
        if word == ";":
            sets.append([])
        else:
            sets[-1].append(word)
    head = sets[0]
    authserv = _unquote(head[0]).lower() if head and head[0] != "=" else ""
    results: list[dict[str, str]] = []
    for words in sets[1:]:
        entry: dict[str, str] = {}
        i = 0
        while i < len(words):
            if i + 2 < len(words) and words[i + 1] == "=" and "=" not in (words[i], words[i + 2]):
                key, val = words[i].lower(), _unquote(words[i + 2]).lower()
                if i == 0:
                    entry["method"], entry["result"] = key.partition("/")[0], val
                else:
                    entry.setdefault(key, val)
                i += 3
            else:
                i += 1
        if "method" in entry:
            results.append(entry)
    return authserv, results


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    """The Public Suffix List bundled with `publicsuffixlist` (no network at run time)."""
    return PublicSuffixList()


@lru_cache(maxsize=1024)
def organizational_domain(domain: str) -> str:
    """The registrable domain of `domain` (`mail.estelar.example` → `estelar.example`,
    `a.b.co.uk` → `b.co.uk`); `domain` itself when it is a public suffix."""
    domain = domain.strip(".").lower()
    found: str | None = _psl().privatesuffix(domain) if domain else None
    return found or domain


def _domain_name(value: str) -> str:
    """`value` as a lower-case domain name, "" when it is none (e.g. an encoded word, or the
    rest of a quoted local part)."""
    value = value.strip(".").lower()
    return value if _DOMAIN.fullmatch(value) else ""


def _dkim_aligned(d: str, from_domain: str) -> bool:
    """DKIM `d=` equal to the From domain or to its organizational domain."""
    d = _domain_name(d)
    return bool(d) and bool(from_domain) and d in (from_domain,
                                                   organizational_domain(from_domain))


def _relaxed(domain: str, from_domain: str) -> bool:
    """DMARC relaxed alignment: the same organizational domain."""
    domain = _domain_name(domain)
    return bool(domain) and bool(from_domain) and (
        organizational_domain(domain) == organizational_domain(from_domain))


def trusted_results(mail: Mail, authserv_ids: Iterable[str]
                    ) -> tuple[str, list[dict[str, str]] | None]:
    """The result sets of the topmost A-R header when one of `authserv_ids` wrote it (None
    otherwise), with that header's authserv-id (or why there is none)."""
    trusted_ids = frozenset(authserv_ids)
    values = mail.headers.get("authentication-results", ())
    if not values or not trusted_ids:
        return "", None
    authserv, results = parse_authentication_results(values[0])
    return authserv, (results if authserv in trusted_ids else None)


def _dmarc(r: dict[str, str], from_domain: str) -> bool:
    """Whether result set `r` is a DMARC result about `from_domain`."""
    return r.get("method") == "dmarc" and _domain_name(r.get("header.from", "")) == from_domain


def authenticated_by_mta(mail: Mail, from_addr: str, authserv_ids: Iterable[str]) -> Verdict:
    """Whether our MTA's Authentication-Results vouch for `from_addr`'s domain: DKIM pass
    with `d=` the From domain or its organizational domain, or DMARC pass for the From
    domain. SPF alone never does."""
    authserv, results = trusted_results(mail, authserv_ids)
    if results is None:
        if not authserv:
            return Verdict(False, "no trusted Authentication-Results")
        return Verdict(False, f"topmost Authentication-Results is from {authserv!r}")
    from_domain = _domain_name(from_addr.rpartition("@")[2])
    for r in results:
        if r.get("result") != "pass":
            continue
        if r.get("method") == "dkim" and _dkim_aligned(r.get("header.d", ""), from_domain):
            return Verdict(True, f"dkim=pass d={r.get('header.d')}")
        if _dmarc(r, from_domain):
            return Verdict(True, f"dmarc=pass header.from={from_domain}")
    return Verdict(False, f"no aligned dkim or dmarc pass from {authserv}")


Alignment = Literal["pass", "fail", "none"]


def sender_alignment(mail: Mail, authserv_ids: Iterable[str]) -> Alignment:
    """Whether our MTA authenticated the From domain of a (customer's) mail.

    "none": no trusted A-R (not configured, or the topmost header is not ours): the caller
    falls back to the From address. "pass": DKIM, DMARC, or SPF aligned with the From domain
    (DMARC relaxed alignment) passed. "fail": a trusted A-R is there and shows no aligned
    pass, or `dmarc=fail` for the From domain, or the From header is ambiguous.
    """
    _, results = trusted_results(mail, authserv_ids)
    if results is None:
        return "none"
    sender = single_from(mail)
    if sender is None:
        return "fail"
    from_domain = _domain_name(sender.rpartition("@")[2])
    if any(_dmarc(r, from_domain) and r.get("result") == "fail" for r in results):
        return "fail"
    for r in results:
        if r.get("result") != "pass":
            continue
        method = r.get("method")
        if method == "dkim" and _relaxed(r.get("header.d", ""), from_domain):
            return "pass"
        if method == "spf" and _relaxed(r.get("smtp.mailfrom", "").rpartition("@")[2],
                                        from_domain):
            return "pass"
        if _dmarc(r, from_domain):
            return "pass"
    return "fail"


# --- the check -------------------------------------------------------------------------------


def reply_token_ticket(mail: Mail, policy: StaffPolicy, today: date) -> Verdict:
    """The ticket named by a valid reply token among the mail's recipients, if any."""
    last = Verdict(False, "no reply token")
    for address in mail.recipients():
        verdict = token_ticket(address, policy.support_address, policy.token_secret, today,
                               policy.previous_secrets)
        if verdict.trusted:
            return verdict
        if verdict.reason != "not a reply address":
            last = verdict
    return last


def _token_refused(mail: Mail, sender: str, policy: StaffPolicy) -> str:
    """Why a valid token still does not make `mail` a staff reply ("" when it does): the
    mail also goes to an outside address (whoever got the token may have passed it on), or
    our MTA says DMARC fails for the From domain."""
    outside = [a for a in (*mail.to, *mail.cc)
               if not policy.is_staff_address(a) and not policy.is_support_address(a)]
    if outside:
        return f"reply token in a mail also to {outside[0]}"
    _, results = trusted_results(mail, policy.authserv_ids)
    from_domain = _domain_name(sender.rpartition("@")[2])
    if any(_dmarc(r, from_domain) and r.get("result") == "fail" for r in results or ()):
        return f"reply token, but dmarc=fail for {from_domain}"
    return ""


def check_staff(mail: Mail, policy: StaffPolicy, ticket: str, today: date) -> Verdict:
    """Is `mail` a genuine staff reply about `ticket`?"""
    sender = single_from(mail)
    if sender is None:
        return Verdict(False, "ambiguous From header")
    if not policy.is_staff_address(sender):
        return Verdict(False, f"{sender} is not staff")
    if not policy.verify:
        return Verdict(True, "staff verification off")
    token = reply_token_ticket(mail, policy, today)
    if token.trusted:
        if token.reason != ticket:
            token = Verdict(False, f"reply token is for {token.reason}, not {ticket}")
        elif refused := _token_refused(mail, sender, policy):
            token = Verdict(False, refused)
        else:
            return Verdict(True, "reply token")
    mta = authenticated_by_mta(mail, sender, policy.authserv_ids)
    if mta.trusted:
        return mta
    return Verdict(False, f"{token.reason}; {mta.reason}")
