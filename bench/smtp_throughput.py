"""Measure SmtpSender throughput to a local aiosmtpd sink over one reused connection.

    .venv/bin/python bench/smtp_throughput.py [COUNT] [SIZE_BYTES]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailbot.config import OutboundConfig  # noqa: E402
from mailbot.replies.smtp import SmtpSender  # noqa: E402
from tests.fixtures.servers import SmtpSink  # noqa: E402


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 4096
    body = ("x" * 76 + "\r\n") * (size // 78)
    payloads = [
        (
            f"From: podpora@estelar.example\r\nTo: c@example.org\r\nSubject: bench {n}\r\n"
            f"Message-ID: <bench-{n}@estelar.example>\r\n\r\n{body}"
        ).encode()
        for n in range(count)
    ]
    with SmtpSink() as sink:
        config = OutboundConfig(mode="smtp", host=sink.host, port=sink.port, security="none")
        with SmtpSender(config, local_hostname="bench.test") as sender:
            started = time.perf_counter()
            for raw in payloads:
                sender.send(raw, "bounces@estelar.example", ["c@example.org"])
            elapsed = time.perf_counter() - started
        sink.wait_for(count)
        print(
            f"{count} mails x {size} B in {elapsed:.2f} s = {count / elapsed:.0f} mails/s "
            f"over {sink.connection_count} connection(s)"
        )


if __name__ == "__main__":
    main()
