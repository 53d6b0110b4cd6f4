"""Send a test mail to the running daemon: `python -m mailbot.tools.send [FILE.eml]`.

Without a file it sends a sample Czech support request with a license number of the
example registry. Over SMTP by default (the embedded listener), `--lmtp` for LMTP.
"""

from __future__ import annotations

import argparse
import smtplib
import sys
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid
from pathlib import Path

SAMPLE_BODY = """Dobrý den,

od rána nám v ACS-line nejde uložit nový směnný kalendář pro třetí směnu,
po kliknutí na Uložit se zobrazí chyba „Neplatný interval“. Prosím o radu.

Licenční číslo: 4012-7733

S pozdravem
Pavel Dvořák
Strojírny Hranice a.s.
"""


def sample(sender: str, to: str, subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Pavel Dvořák <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=sender.split("@")[-1])
    msg.set_content(SAMPLE_BODY)
    return msg.as_bytes(policy=SMTP)  # CRLF line ends, as SMTP requires


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file", nargs="?", type=Path, help="an .eml file to send instead of the sample")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=2525)
    p.add_argument("--lmtp", action="store_true")
    p.add_argument("--from", dest="sender", default="dvorak@strojirny-hranice.cz")
    p.add_argument("--to", default="podpora@estelar.example")
    p.add_argument("--subject", default="Nejde uložit směnný kalendář")
    args = p.parse_args(argv)
    raw = args.file.read_bytes() if args.file else sample(args.sender, args.to, args.subject)
    cls = smtplib.LMTP if args.lmtp else smtplib.SMTP
    with cls(args.host, args.port) as client:
        refused = client.sendmail(args.sender, [args.to], raw)
    if refused:
        print(f"refused: {refused}", file=sys.stderr)
        return 1
    print(f"sent {len(raw)} bytes to {args.to} via {'LMTP' if args.lmtp else 'SMTP'} "
          f"{args.host}:{args.port}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
