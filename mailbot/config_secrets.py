"""Secrets: passwords and the reply-token secret, read from the environment or systemd
credentials (never from the TOML file)."""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from mailbot.errors import ConfigError

if TYPE_CHECKING:
    from mailbot.config_sections import ConversationConfig


ENV_LOCK = threading.Lock()
"""Held while secret variables are briefly out of `os.environ` (child processes start)."""

TOKEN_SECRET_CREDENTIAL = "reply-token-secret"
"""The systemd credential read for the reply-token secret when none is named."""
TOKEN_SECRET_MIN_BYTES = 32


def read_token_secret(conv: ConversationConfig) -> bytes | None:
    """The reply-token secret: the credential `token_secret_credential` first, then the
    variable `token_secret_env`, then a credential called `reply-token-secret` if
    $CREDENTIALS_DIRECTORY has one; None when there is none (the store's may be used).

    Raises:
        ConfigError: a named source is missing, or the secret is shorter than 32 bytes.
    """
    key, value = None, None
    if conv.token_secret_credential:
        key, value = "token_secret_credential", read_secret(None, conv.token_secret_credential)
    elif conv.token_secret_env:
        key, value = "token_secret_env", read_secret(conv.token_secret_env, None)
    else:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if directory and (Path(directory) / TOKEN_SECRET_CREDENTIAL).is_file():
            key, value = "token_secret_credential", read_secret(None, TOKEN_SECRET_CREDENTIAL)
    if value is None:
        if not conv.token_secret_from_store:
            raise ConfigError("conversation.token_secret_from_store = false but no secret: set "
                              "conversation.token_secret_credential or token_secret_env")
        return None
    secret = value.encode("utf-8")
    if len(secret) < TOKEN_SECRET_MIN_BYTES:
        raise ConfigError(f"conversation.{key}: the reply-token secret has {len(secret)} bytes, "
                          f"at least {TOKEN_SECRET_MIN_BYTES} are needed")
    return secret


def read_secret(env: str | None, credential: str | None,
                what: str = "password") -> str | None:
    """A password from an environment variable or a systemd credential file, else None.

    `what` names the setting in messages (``client_secret`` → ``client_secret_env``).

    Raises:
        ConfigError: the named variable or credential does not exist.
    """
    if env:
        with ENV_LOCK:
            value = os.environ.get(env)
        if value is None:
            raise ConfigError(f"environment variable {env} (named by {what}_env) is not set")
        return value
    if credential:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ConfigError(
                f"{what}_credential={credential!r} but $CREDENTIALS_DIRECTORY is not set"
            )
        try:
            return (Path(directory) / credential).read_text(encoding="utf-8").rstrip("\n")
        except OSError as exc:
            raise ConfigError(f"credential {credential!r}: {exc.strerror}") from None
    return None


@functools.lru_cache(maxsize=4)
def previous_secret(env: str | None, credential: str | None) -> tuple[bytes, ...]:
    """The rotation's previous reply-token secret from `env` or `credential` (read once)."""
    value = read_secret(env, credential)
    return (value.encode("utf-8"),) if value else ()
