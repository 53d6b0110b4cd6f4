"""Configuration: TOML → frozen, validated models; secrets from the environment.

`load(path)` runs once at start (in the CLI / `app.py`) and the result is passed down as
arguments: there is no global config. Validation uses pydantic with `extra="forbid"`, so an
unknown key, a wrong type or a bad value becomes one :class:`ConfigError` line that names the
key path, e.g. ``calendar.open: expected HH:MM, got '25:00'``.

Secrets (IMAP/SMTP passwords, the reply-token secret) are never read from the TOML file: a
server section names an environment variable (``password_env``) or a systemd credential
(``password_credential``, read from ``$CREDENTIALS_DIRECTORY``).

The sections' models are in :mod:`mailbot.config_sections`, the secrets in
:mod:`mailbot.config_secrets`; both are re-exported here.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mailbot.classify.settings import ClassifyConfig
from mailbot.config_secrets import (
    ENV_LOCK,
    TOKEN_SECRET_CREDENTIAL,
    TOKEN_SECRET_MIN_BYTES,
    read_secret,
    read_token_secret,
)
from mailbot.config_sections import (
    Address,
    AlertsConfig,
    CalendarConfig,
    ConversationConfig,
    Domain,
    LimitsConfig,
    MailboxConfig,
    MonitoringConfig,
    NewsConfig,
    NoticesConfig,
    RepliesConfig,
    RetentionConfig,
    ScheduleConfig,
    StoreConfig,
    TierOffer,
    WorkerConfig,
    _Section,
)
from mailbot.config_servers import (
    OAUTH2_DEFAULT_SCOPES,
    ImapMailboxConfig,
    ListenerConfig,
    OAuth2Config,
    OutboundConfig,
)
from mailbot.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG", "ENV_LOCK", "OAUTH2_DEFAULT_SCOPES", "ROOT", "TOKEN_SECRET_CREDENTIAL", "TOKEN_SECRET_MIN_BYTES",
    "Address", "AlertsConfig", "CalendarConfig", "ClassifyConfig", "Config",
    "ConversationConfig", "Domain", "ImapMailboxConfig", "LimitsConfig", "ListenerConfig",
    "MailboxConfig", "MonitoringConfig", "NewsConfig", "NoticesConfig", "OAuth2Config",
    "OutboundConfig", "RepliesConfig", "RetentionConfig", "ScheduleConfig", "StoreConfig",
    "TierOffer", "WorkerConfig", "load", "parse", "read_secret", "read_token_secret",
]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "config" / "mailbot.toml"


class Config(_Section):
    """The whole configuration; `root` anchors relative paths (the repo or StateDirectory)."""

    root: Path = ROOT
    store: StoreConfig = StoreConfig()
    mailbox: MailboxConfig = MailboxConfig()
    calendar: CalendarConfig = CalendarConfig()
    classify: ClassifyConfig = ClassifyConfig()
    replies: RepliesConfig = RepliesConfig()
    outbound: OutboundConfig = OutboundConfig()
    listener: ListenerConfig = ListenerConfig()
    imap: tuple[ImapMailboxConfig, ...] = ()
    worker: WorkerConfig = WorkerConfig()
    conversation: ConversationConfig = ConversationConfig()
    limits: LimitsConfig = LimitsConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    notices: NoticesConfig = NoticesConfig()
    news: NewsConfig = NewsConfig()
    retention: RetentionConfig = RetentionConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    alerts: AlertsConfig = AlertsConfig()

    def path(self, value: str) -> Path:
        """`value` as an absolute path, relative ones taken from `root`."""
        p = Path(value)
        return p if p.is_absolute() else self.root / p

    @property
    def database_url(self) -> str:
        url = self.store.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str(self.path(url[len(prefix) :]))
        return url


def _describe(error: Mapping[str, Any]) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{loc}: unknown key"
    if kind == "missing":
        return f"{loc}: required key is missing"
    msg = str(error["msg"]).removeprefix("Value error, ")
    return f"{loc}: {msg} (got {error.get('input')!r})" if "got" not in msg else f"{loc}: {msg}"


def parse(data: dict[str, Any], root: Path = ROOT, source: str = "<config>", *,
          learned: bool = True) -> Config:
    """Validate a config mapping; with `learned`, read the model file it names.

    Raises:
        ConfigError: with one line naming the first bad key.
    """
    data = dict(data)
    data.setdefault("root", root)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = _describe(errors[0])
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {first}{more}") from None
    return _with_learned_model(config, source) if learned else config


def _with_learned_model(config: Config, source: str) -> Config:
    """`config` with the file `classify.model.learned` names read into `trained`.

    Raises:
        ConfigError: the file is unreadable or not a model file, naming the key.
    """
    from mailbot.classify.learned import TrainedModel

    model = config.classify.model
    if not model.learned:
        return config
    path = config.path(model.learned)
    try:
        trained = TrainedModel.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{source}: classify.model.learned: cannot read {path}: "
                          f"{exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{source}: classify.model.learned: {path}: {exc}") from None
    model = model.model_copy(update={"trained": trained})
    classify = config.classify.model_copy(update={"model": model})
    return config.model_copy(update={"classify": classify})


def load(path: str | os.PathLike[str] | None = None, *, learned: bool = True) -> Config:
    """Read and validate a TOML config file (default: `config/mailbot.toml`).

    Relative paths inside it are taken from the repository root when the file lives in the
    repository's `config/`, else from the file's own directory.

    Raises:
        ConfigError: unreadable file, bad TOML, or a bad key.
    """
    p = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    root = p.resolve().parent
    if root.name == "config":
        root = root.parent
    if "root" in data:
        data["root"] = str((root / str(data["root"])).resolve())
    return parse(data, root=root, source=str(p), learned=learned)
