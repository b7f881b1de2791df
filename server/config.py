"""Service configuration, read once from the environment.

Every setting has a safe default so `make run` works on a fresh machine. Secrets can be given
directly (`ERV_X`) or as a path to a file holding them (`ERV_X_FILE`), so deployments can
mount them instead of putting them in the process environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SMS_TEMPLATE = "Here is the link you asked for: {link} It works for {minutes} minutes."


class ConfigError(ValueError):
    """A setting is present but unusable; the message names the variable."""


def _get(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value if value else default


def _secret(env: Mapping[str, str], name: str) -> str:
    """A secret from `NAME` or from the file named by `NAME_FILE`."""
    value = env.get(name, "").strip()
    if value:
        return value
    path = env.get(f"{name}_FILE", "").strip()
    if not path:
        return ""
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from exc


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from exc
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())


@dataclass(frozen=True)
class TwilioSettings:
    account_sid: str = ""
    auth_token: str = ""
    from_number: str = ""
    messaging_service_sid: str = ""
    base_url: str = "https://api.twilio.com"


@dataclass(frozen=True)
class NotifySettings:
    api_key: str = ""
    template_id: str = ""
    base_url: str = "https://api.notifications.service.gov.uk"


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8443
    public_url: str = "https://localhost:8443"
    data_dir: Path = Path("var")
    tls_cert: Path = Path("certs/dev-cert.pem")
    tls_key: Path = Path("certs/dev-key.pem")
    tls: bool = True
    secure_cookies: bool = True

    invite_ttl: int = 600
    credential_ttl: int = 4 * 3600
    resume_window: int = 60
    heartbeat: int = 20
    specialist_ring: int = 45
    staff_session_ttl: int = 12 * 3600

    # Sign-in throttling (server.throttle): recent failures allowed per account name from
    # browsers without its device cookie (and per device cookie), per client address, and
    # how many seconds every count takes to halve. Never a lock-out of the right password
    # from a browser that signed in before.
    login_max_failures: int = 5
    login_client_max_failures: int = 20
    login_decay_seconds: int = 600
    scrypt_n: int = 2**17  # the password hash's cost (OWASP: 2^17); old hashes rehashed
    account_watch_interval: float = 1.0  # seconds between checks for cut-off accounts

    sms_gateway: str = "console"
    # `erv run` refuses the console gateway on a non-loopback ERV_PUBLIC_URL unless this is set.
    sms_console_public: bool = False
    sms_template: str = DEFAULT_SMS_TEMPLATE
    twilio: TwilioSettings = field(default_factory=TwilioSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)

    stun_urls: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_secret: str = ""
    turn_ttl: int = 600

    demo_password: str = ""

    # What the caller's page shows and where its quick exit goes: neutral by default.
    caller_title: str = "Video link"
    quick_exit_url: str = "https://www.bbc.co.uk/weather"
    map_url_template: str = "https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map=17/{lat}/{lon}"

    record_key_file: Path | None = None  # default: <data_dir>/record-keys.json
    retention_days: int = 365  # `erv purge` shreds sessions idle longer than this
    purge_interval: int = 6 * 3600  # how often the running service purges by itself
    evidence_max_bytes: int = 20 * 1024 * 1024  # snapshots and caller uploads
    # What one session may hold (snapshots and uploads by count; every kind by bytes), and
    # how many uploads one sender (a caller's credential, a staff member) may send at once.
    evidence_session_files: int = 30
    evidence_session_bytes: int = 200 * 1024 * 1024
    uploads_per_sender: int = 2
    # The fallback ladder's still pictures: how often the caller's page sends one when no
    # video path connects, and the largest accepted (a 640-pixel JPEG is about 40 KB).
    still_every: int = 3
    still_max_bytes: int = 512 * 1024

    # Scale-out: with a Redis URL every node shares live state and stores through Redis.
    redis_url: str = ""
    redis_allow_data_loss: bool = False  # start even if Redis persistence (AOF) is off
    redis_prefix: str = "erv:"
    node_name: str = ""  # shown in /healthz and /metrics; default: host name and port

    # Monitoring: /metrics and the detailed /healthz need this bearer token, or are served
    # only on their own listen address ("host:port"); with neither, /metrics is not served.
    metrics_token: str = ""
    metrics_listen: str = ""

    # Connections: a request's headers must all arrive within header_timeout seconds of the
    # connection opening (TLS handshake included); at most max_connections_per_client open
    # at once from one address (0: no cap; by default 100 when this node terminates TLS,
    # none behind a proxy); at most max_connections in all (0: the file limit less a reserve).
    header_timeout: int = 10
    max_connections_per_client: int | None = None  # None: by ERV_TLS, see below
    max_connections: int = 0

    @property
    def db_path(self) -> Path:
        return self.data_dir / "erv.sqlite3"

    @property
    def client_connection_cap(self) -> int:
        """Open connections allowed per client address (0: no cap). By default 100 where
        this node terminates TLS, and none behind a proxy, where every connection has the
        proxy's address and the cap belongs in the proxy."""
        if self.max_connections_per_client is not None:
            return self.max_connections_per_client
        return 100 if self.tls else 0

    @property
    def record_keys_path(self) -> Path:
        return self.record_key_file or self.data_dir / "record-keys.json"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        port = _int(env, "ERV_PORT", 8443, minimum=1)
        tls = _bool(env, "ERV_TLS", True)
        scheme = "https" if tls else "http"
        config = cls(
            host=_get(env, "ERV_HOST", "127.0.0.1"),
            port=port,
            public_url=_get(env, "ERV_PUBLIC_URL", f"{scheme}://localhost:{port}").rstrip("/"),
            data_dir=Path(_get(env, "ERV_DATA_DIR", "var")),
            tls_cert=Path(_get(env, "ERV_TLS_CERT", "certs/dev-cert.pem")),
            tls_key=Path(_get(env, "ERV_TLS_KEY", "certs/dev-key.pem")),
            tls=tls,
            secure_cookies=_bool(env, "ERV_SECURE_COOKIES", True),
            invite_ttl=_int(env, "ERV_INVITE_TTL", 600, minimum=30),
            credential_ttl=_int(env, "ERV_CREDENTIAL_TTL", 4 * 3600, minimum=60),
            resume_window=_int(env, "ERV_RESUME_WINDOW", 60, minimum=1),
            heartbeat=_int(env, "ERV_HEARTBEAT", 20, minimum=1),
            specialist_ring=_int(env, "ERV_SPECIALIST_RING", 45, minimum=1),
            staff_session_ttl=_int(env, "ERV_STAFF_SESSION_TTL", 12 * 3600, minimum=60),
            login_max_failures=_int(env, "ERV_LOGIN_MAX_FAILURES", 5, minimum=1),
            login_client_max_failures=_int(env, "ERV_LOGIN_CLIENT_MAX_FAILURES", 20,
                                           minimum=1),
            login_decay_seconds=_int(env, "ERV_LOGIN_DECAY_SECONDS", 600, minimum=1),
            scrypt_n=_int(env, "ERV_SCRYPT_N", 2**17, minimum=2**10),
            sms_gateway=_get(env, "ERV_SMS_GATEWAY", "console"),
            sms_console_public=_bool(env, "ERV_SMS_CONSOLE_PUBLIC", False),
            sms_template=_get(env, "ERV_SMS_TEMPLATE", DEFAULT_SMS_TEMPLATE),
            twilio=TwilioSettings(
                account_sid=_get(env, "ERV_TWILIO_ACCOUNT_SID", ""),
                auth_token=_secret(env, "ERV_TWILIO_AUTH_TOKEN"),
                from_number=_get(env, "ERV_TWILIO_FROM", ""),
                messaging_service_sid=_get(env, "ERV_TWILIO_MESSAGING_SERVICE_SID", ""),
                base_url=_get(env, "ERV_TWILIO_BASE_URL", "https://api.twilio.com").rstrip("/"),
            ),
            notify=NotifySettings(
                api_key=_secret(env, "ERV_NOTIFY_API_KEY"),
                template_id=_get(env, "ERV_NOTIFY_TEMPLATE_ID", ""),
                base_url=_get(
                    env, "ERV_NOTIFY_BASE_URL", "https://api.notifications.service.gov.uk"
                ).rstrip("/"),
            ),
            stun_urls=_list(env, "ERV_STUN_URLS"),
            turn_urls=_list(env, "ERV_TURN_URLS"),
            turn_secret=_secret(env, "ERV_TURN_SECRET"),
            turn_ttl=_int(env, "ERV_TURN_TTL", 600, minimum=60),
            demo_password=_secret(env, "ERV_DEMO_PASSWORD"),
            record_key_file=Path(env["ERV_RECORD_KEY_FILE"])
            if env.get("ERV_RECORD_KEY_FILE", "").strip() else None,
            retention_days=_int(env, "ERV_RETENTION_DAYS", 365, minimum=1),
            purge_interval=_int(env, "ERV_PURGE_INTERVAL", 6 * 3600, minimum=1),
            evidence_max_bytes=_int(env, "ERV_EVIDENCE_MAX_BYTES", 20 * 1024 * 1024,
                                    minimum=1024),
            evidence_session_files=_int(env, "ERV_EVIDENCE_SESSION_FILES", 30, minimum=1),
            evidence_session_bytes=_int(env, "ERV_EVIDENCE_SESSION_BYTES", 200 * 1024 * 1024,
                                        minimum=1024),
            uploads_per_sender=_int(env, "ERV_UPLOADS_PER_SENDER", 2, minimum=1),
            still_every=_int(env, "ERV_STILL_EVERY", 3, minimum=1),
            still_max_bytes=_int(env, "ERV_STILL_MAX_BYTES", 512 * 1024, minimum=1024),
            redis_url=_secret(env, "ERV_REDIS_URL"),
            redis_allow_data_loss=_bool(env, "ERV_REDIS_ALLOW_DATA_LOSS", False),
            redis_prefix=_get(env, "ERV_REDIS_PREFIX", "erv:"),
            node_name=_get(env, "ERV_NODE_NAME", ""),
            metrics_token=_secret(env, "ERV_METRICS_TOKEN"),
            metrics_listen=_get(env, "ERV_METRICS_LISTEN", ""),
            header_timeout=_int(env, "ERV_HEADER_TIMEOUT", 10, minimum=1),
            max_connections_per_client=_int(env, "ERV_MAX_CONNECTIONS_PER_CLIENT", -1) if
            env.get("ERV_MAX_CONNECTIONS_PER_CLIENT", "").strip() else None,
            max_connections=_int(env, "ERV_MAX_CONNECTIONS", 0),
            caller_title=_get(env, "ERV_CALLER_TITLE", "Video link"),
            quick_exit_url=_get(env, "ERV_QUICK_EXIT_URL", "https://www.bbc.co.uk/weather"),
            map_url_template=_get(
                env, "ERV_MAP_URL_TEMPLATE",
                "https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map=17/{lat}/{lon}",
            ),
        )
        config.validate()
        return config

    def validate(self) -> None:
        if self.sms_gateway not in {"console", "twilio", "notify"}:
            raise ConfigError(
                f"ERV_SMS_GATEWAY must be console, twilio or notify, got {self.sms_gateway!r}"
            )
        if "{link}" not in self.sms_template:
            raise ConfigError("ERV_SMS_TEMPLATE must contain {link}")
        if self.sms_gateway == "twilio":
            t = self.twilio
            if not (t.account_sid and t.auth_token and (t.from_number or t.messaging_service_sid)):
                raise ConfigError(
                    "ERV_SMS_GATEWAY=twilio needs ERV_TWILIO_ACCOUNT_SID, ERV_TWILIO_AUTH_TOKEN "
                    "and ERV_TWILIO_FROM or ERV_TWILIO_MESSAGING_SERVICE_SID"
                )
        if self.sms_gateway == "notify" and not (self.notify.api_key and self.notify.template_id):
            raise ConfigError(
                "ERV_SMS_GATEWAY=notify needs ERV_NOTIFY_API_KEY and ERV_NOTIFY_TEMPLATE_ID"
            )
        if not self.quick_exit_url.startswith(("https://", "http://")):
            raise ConfigError("ERV_QUICK_EXIT_URL must be an http(s) address")
        if self.scrypt_n & (self.scrypt_n - 1):
            raise ConfigError(f"ERV_SCRYPT_N must be a power of two, got {self.scrypt_n}")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("ERV_REDIS_URL must start with redis://, rediss:// or unix://")
        if self.metrics_listen:
            metrics_address(self.metrics_listen)  # raises ConfigError if unusable
        if self.metrics_token and len(self.metrics_token) < 16:
            raise ConfigError("ERV_METRICS_TOKEN must be at least 16 characters")
        if self.turn_urls and not self.turn_secret:
            raise ConfigError("ERV_TURN_URLS is set but ERV_TURN_SECRET is not")
        for url in self.turn_urls:
            if not url.startswith(("turn:", "turns:")):
                raise ConfigError(f"ERV_TURN_URLS entries start with turn: or turns:, got {url!r}")
        for url in self.stun_urls:
            if not url.startswith(("stun:", "stuns:")):
                raise ConfigError(f"ERV_STUN_URLS entries start with stun:, got {url!r}")


def metrics_address(listen: str) -> tuple[str, int]:
    """ERV_METRICS_LISTEN as (host, port): "10.0.0.11:9443", "[::1]:9443" or ":9443"."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"ERV_METRICS_LISTEN must be host:port, got {listen!r}")
    return host or "0.0.0.0", int(port)  # noqa: S104 - the operator asked for every address
