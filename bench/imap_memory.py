"""Peak memory of one IMAP intake pass over large mail (root: starts a private Dovecot).

The folder holds `--n` messages of `--mb` MB and `--large` messages of `--large-mb` MB (over
the default limits.message_bytes, 25 MiB). A fresh process per code tree runs
`ImapPoller.take_new` once into a temporary SQLite store and reports its peak RSS (VmHWM),
the FETCH commands and the most body bytes one FETCH answer carried. Compare trees with
`--tree PATH` (e.g. the base checkout); the default is this one.

    bench/imap_memory.py [--n 10] [--mb 6] [--large 2] [--large-mb 30] [--tree PATH]...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mail(i: int, mb: float) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Zakaznik {i} <zakaznik{i}@example.org>"
    msg["To"] = "podpora@estelar.example"
    msg["Subject"] = f"Dotaz {i} s prilohou"
    msg["Message-ID"] = f"<bench-{i}@example.org>"
    msg.set_content("Dobry den, v priloze posilam log.\n\nLicencni cislo: 4012-7733\n")
    msg.add_attachment(os.urandom(int(mb * 1024 * 1024 * 3 / 4)), maintype="application",
                       subtype="octet-stream", filename=f"log{i}.bin")
    return bytes(msg)


def child(port: int, user: str, password: str, db: str) -> None:
    """One take_new pass; prints a JSON line with the figures."""
    import inspect
    import threading

    from imapclient import IMAPClient

    from mailbot.config import ImapMailboxConfig
    from mailbot.ingest.imap import ImapPoller
    from mailbot.ingest.intake import Intake
    from mailbot.store import Store

    from mailbot import migrations

    store = Store.from_url(f"sqlite:///{db}")
    migrations.upgrade(store.engine)
    box = ImapMailboxConfig(host="127.0.0.1", port=port, security="none", username=user)
    kwargs = {}
    if "limits" in inspect.signature(ImapPoller).parameters:
        from mailbot.config import LimitsConfig
        kwargs["limits"] = LimitsConfig()
    poller = ImapPoller(box, Intake(store), store, threading.Event(), password=password,
                        **kwargs)  # type: ignore[arg-type]
    client = IMAPClient("127.0.0.1", port=port, ssl=False, timeout=60, use_uid=True)
    client.login(user, password)
    uidvalidity = int(client.select_folder("INBOX")[b"UIDVALIDITY"])
    fetches: list[tuple[str, int]] = []
    real = client.fetch

    def fetch(messages, data, modifiers=None):  # type: ignore[no-untyped-def]
        answer = real(messages, data, modifiers)
        body = sum(len(v) for d in answer.values() for k, v in d.items()
                   if k.startswith(b"BODY[") and v is not None)
        fetches.append((" ".join(x.decode() if isinstance(x, bytes) else str(x)
                                 for x in data), body))
        return answer

    client.fetch = fetch  # type: ignore[method-assign]
    taken = poller.take_new(client, uidvalidity)
    client.logout()
    hwm = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmHWM:"))
    print(json.dumps({"taken": taken, "vmhwm_mb": round(hwm / 1024, 1),
                      "fetches": len(fetches),
                      "max_fetch_body_mb": round(max(b for _, b in fetches) / 2**20, 1),
                      "items": sorted({i for i, _ in fetches}),
                      "stored": store.count_inbound()}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--mb", type=float, default=6)
    ap.add_argument("--large", type=int, default=2)
    ap.add_argument("--large-mb", type=float, default=30)
    ap.add_argument("--tree", action="append", default=[])
    ap.add_argument("--child", nargs=4, metavar=("PORT", "USER", "PASSWORD", "DB"))
    args = ap.parse_args()
    if args.child:
        port, user, password, db = args.child
        child(int(port), user, password, db)
        return
    sys.path.insert(0, str(ROOT))
    from tests.fixtures.servers import running_dovecot

    trees = args.tree or [str(ROOT)]
    with running_dovecot() as dovecot, tempfile.TemporaryDirectory() as tmp:
        user = dovecot.new_user()
        for i in range(args.n):
            dovecot.append(user, _mail(i, args.mb))
        for i in range(args.large):
            dovecot.append(user, _mail(1000 + i, args.large_mb))
        print(f"folder: {args.n} x {args.mb} MB + {args.large} x {args.large_mb} MB")
        for k, tree in enumerate(trees):
            env = dict(os.environ, PYTHONPATH=tree)
            out = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child", str(dovecot.imap_port),
                 user, dovecot.password, str(Path(tmp) / f"s{k}.db")],
                env=env, capture_output=True, text=True, timeout=600, check=False)
            line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-2000:]
            print(f"{tree}: {line}")


if __name__ == "__main__":
    main()
