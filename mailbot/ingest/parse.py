"""parse(raw) -> Mail. PROVISIONAL minimal version; being replaced by the full parser."""

from __future__ import annotations

import email
import email.policy
import email.utils

from mailbot.domain import Mail


def parse(raw: bytes) -> Mail:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    headers: dict[str, tuple[str, ...]] = {}
    for k, v in msg.items():
        headers.setdefault(k.lower(), ())
        headers[k.lower()] += (str(v),)
    name, addr = email.utils.parseaddr(str(msg.get("from", "")))
    body = msg.get_body(("plain", "html"))
    text = body.get_content() if body is not None else ""
    return Mail(
        message_id=(msg.get("message-id") or "").strip() or None,
        from_addr=addr.lower() or None,
        from_name=name,
        to=tuple(a.lower() for _, a in email.utils.getaddresses(msg.get_all("to", []))),
        cc=(),
        subject=str(msg.get("subject", "")),
        date=None,
        in_reply_to=tuple(str(msg.get("in-reply-to", "")).split()),
        references=tuple(str(msg.get("references", "")).split()),
        return_path=msg.get("return-path"),
        headers=headers,
        content_type=msg.get_content_type(),
        report_type=msg.get_param("report-type", "") if msg.get_content_maintype() == "multipart" else "",  # type: ignore[arg-type]
        text=text,
        html="",
    )
