"""`python -m mailbot` and the `mailbot` console script (`main`).

The script's module imports nothing but `mailbot.memory` (small): a decision process spawned
by the daemon re-runs its parent's script as `__mp_main__` (multiprocessing's "spawn"), so
whatever the script imports at its top, every child imports too. Importing the command line
here, at module level, gave each child click, rich and every command module (~220 modules,
4 MB). The collector is held back from here on, before the command line's imports
(`memory.starting`).
"""

from __future__ import annotations

from mailbot import memory

memory.starting()


def main() -> None:
    """Run the command line (`mailbot.cli.main`)."""
    from mailbot.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
