"""Mail.recipients: the plain addresses of delivery headers are read without the parser."""

from __future__ import annotations

import email.utils
import random

from mailbot.domain import _PLAIN_ADDRESS, _header_addresses


def test_plain_header_addresses_are_what_the_parser_returns() -> None:
    """Every value the shortcut takes gives what email.utils.getaddresses gives; values it
    leaves (comments, names, quotes, lists, odd dots) still go to the parser."""
    pieces = ["a", "Z9", "x.y", "o'neil", "a+tag", "_", "-", ".", "..", "@", "<", ">", " ", "\t",
              "example", "org", "(c)", '"q"', ",", ";", ":", "é", "[1.2.3.4]", "b-c", "!#$%&*/=?^`{|}~"]
    rng = random.Random(3)
    taken = 0
    for _ in range(20000):
        value = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 9)))
        if rng.random() < 0.5:
            value = f"{rng.choice(['', ' ', '<'])}{rng.choice(pieces[:6])}@{rng.choice(pieces[:6])}." \
                    f"{rng.choice(['org', 'cz', 'b-c'])}{rng.choice(['', '>', ' '])}"
        parsed = [a for _, a in email.utils.getaddresses([value]) if a]
        assert _header_addresses(value) == parsed, value
        taken += _PLAIN_ADDRESS.fullmatch(value) is not None
    assert taken > 2000  # the shortcut is exercised
