"""server.config: defaults, environment parsing, secrets from files, gateway validation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from server.config import DEFAULT_SMS_TEMPLATE, Config, ConfigError

TWILIO = {
    "ERV_SMS_GATEWAY": "twilio",
    "ERV_TWILIO_ACCOUNT_SID": "AC0123",
    "ERV_TWILIO_AUTH_TOKEN": "token",
    "ERV_TWILIO_FROM": "+447700900000",
}
NOTIFY = {
    "ERV_SMS_GATEWAY": "notify",
    "ERV_NOTIFY_API_KEY": "key",
    "ERV_NOTIFY_TEMPLATE_ID": "tpl",
}


def refused(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        Config.from_env(env)
    return str(info.value)


# --- defaults ----------------------------------------------------------------------------------


def test_empty_environment_gives_the_defaults() -> None:
    config = Config.from_env({})
    assert config == Config()
    assert (config.host, config.port, config.tls, config.secure_cookies) == (
        "127.0.0.1", 8443, True, True,
    )
    assert config.public_url == "https://localhost:8443"
    assert config.data_dir == Path("var")
    assert config.db_path == Path("var") / "erv.sqlite3"
    assert (config.tls_cert, config.tls_key) == (
        Path("certs/dev-cert.pem"), Path("certs/dev-key.pem")
    )
    assert (config.invite_ttl, config.credential_ttl, config.resume_window) == (600, 14400, 60)
    assert (config.login_max_failures, config.login_client_max_failures,
            config.login_decay_seconds) == (5, 20, 600)
    assert config.scrypt_n == 2**17
    assert config.sms_gateway == "console"
    assert config.sms_template == DEFAULT_SMS_TEMPLATE
    assert (config.stun_urls, config.turn_urls, config.turn_secret) == ((), (), "")
    assert config.demo_password == ""


def test_default_sms_template_is_neutral() -> None:
    """The text may be read by the person the caller is hiding from."""
    text = DEFAULT_SMS_TEMPLATE.lower()
    assert "{link}" in DEFAULT_SMS_TEMPLATE
    for word in ("police", "999", "emergency", "abuse", "help"):
        assert word not in text


def test_blank_values_fall_back_to_defaults() -> None:
    config = Config.from_env({"ERV_PORT": "  ", "ERV_HOST": "", "ERV_TLS": " ",
                              "ERV_SMS_GATEWAY": "  "})
    assert config == Config()


# --- parsing -----------------------------------------------------------------------------------


def test_values_are_read_and_trimmed(tmp_path: Path) -> None:
    config = Config.from_env({
        "ERV_HOST": " 0.0.0.0 ",
        "ERV_PORT": " 9000 ",
        "ERV_PUBLIC_URL": "https://erv.example.org/",
        "ERV_DATA_DIR": str(tmp_path),
        "ERV_INVITE_TTL": "30",
        "ERV_RESUME_WINDOW": "5",
        "ERV_STUN_URLS": " stun:a.example:3478 , ,stun:b.example:3478,",
    })
    assert (config.host, config.port) == ("0.0.0.0", 9000)
    assert config.public_url == "https://erv.example.org"
    assert config.db_path == tmp_path / "erv.sqlite3"
    assert (config.invite_ttl, config.resume_window) == (30, 5)
    assert config.stun_urls == ("stun:a.example:3478", "stun:b.example:3478")


def test_public_url_follows_tls_and_port() -> None:
    assert Config.from_env({"ERV_TLS": "false", "ERV_PORT": "8080"}).public_url == (
        "http://localhost:8080"
    )
    assert Config.from_env({"ERV_PORT": "9443"}).public_url == "https://localhost:9443"


@pytest.mark.parametrize(
    ("raw", "value"),
    [("1", True), ("true", True), ("YES", True), (" On ", True),
     ("0", False), ("False", False), ("no", False), ("off", False)],
)
def test_booleans(raw: str, value: bool) -> None:
    assert Config.from_env({"ERV_SECURE_COOKIES": raw}).secure_cookies is value


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ERV_PORT": "eighty"}, "ERV_PORT"),
        ({"ERV_PORT": "0"}, "ERV_PORT"),
        ({"ERV_PORT": "1.5"}, "ERV_PORT"),
        ({"ERV_INVITE_TTL": "29"}, "ERV_INVITE_TTL"),
        ({"ERV_CREDENTIAL_TTL": "-1"}, "ERV_CREDENTIAL_TTL"),
        ({"ERV_RESUME_WINDOW": "0"}, "ERV_RESUME_WINDOW"),
        ({"ERV_HEARTBEAT": "soon"}, "ERV_HEARTBEAT"),
        ({"ERV_SPECIALIST_RING": "0"}, "ERV_SPECIALIST_RING"),
        ({"ERV_LOGIN_MAX_FAILURES": "0"}, "ERV_LOGIN_MAX_FAILURES"),
        ({"ERV_SCRYPT_N": "3000"}, "ERV_SCRYPT_N"),
        ({"ERV_SCRYPT_N": "512"}, "ERV_SCRYPT_N"),
        ({"ERV_TURN_TTL": "59"}, "ERV_TURN_TTL"),
        ({"ERV_TLS": "maybe"}, "ERV_TLS"),
        ({"ERV_SECURE_COOKIES": "2"}, "ERV_SECURE_COOKIES"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], named: str) -> None:
    message = refused(env)
    assert message.startswith(named + " ")
    assert env[named].strip().lower() in message.lower()  # and says what it got


# --- secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "read"),
    [
        ("ERV_TURN_SECRET", lambda c: c.turn_secret),
        ("ERV_TWILIO_AUTH_TOKEN", lambda c: c.twilio.auth_token),
        ("ERV_NOTIFY_API_KEY", lambda c: c.notify.api_key),
        ("ERV_DEMO_PASSWORD", lambda c: c.demo_password),
    ],
)
def test_secrets_from_the_variable_or_a_file(
    tmp_path: Path, variable: str, read: Callable[[Config], str]
) -> None:
    getter = read
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-the-file\n", encoding="utf-8")

    assert getter(Config.from_env({f"{variable}_FILE": str(secret_file)})) == "from-the-file"
    assert getter(Config.from_env({variable: " direct "})) == "direct"
    # The variable itself wins over the file.
    both = {variable: "direct", f"{variable}_FILE": str(secret_file)}
    assert getter(Config.from_env(both)) == "direct"


def test_unreadable_secret_file_names_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-file"
    message = refused({"ERV_TURN_SECRET_FILE": str(missing)})
    assert message.startswith("ERV_TURN_SECRET_FILE")
    assert str(missing) in message


def test_secret_file_that_is_a_directory_is_a_config_error(tmp_path: Path) -> None:
    directory = tmp_path / "a-directory"
    directory.mkdir()
    message = refused({"ERV_NOTIFY_API_KEY_FILE": str(directory)})
    assert message.startswith("ERV_NOTIFY_API_KEY_FILE")


# --- validation --------------------------------------------------------------------------------


def test_unknown_gateway() -> None:
    message = refused({"ERV_SMS_GATEWAY": "pigeon"})
    assert "ERV_SMS_GATEWAY" in message and "pigeon" in message


def test_twilio_complete() -> None:
    config = Config.from_env(TWILIO)
    assert config.sms_gateway == "twilio"
    assert (config.twilio.account_sid, config.twilio.auth_token, config.twilio.from_number) == (
        "AC0123", "token", "+447700900000"
    )
    assert config.twilio.base_url == "https://api.twilio.com"


def test_twilio_messaging_service_instead_of_a_from_number() -> None:
    env = {**TWILIO, "ERV_TWILIO_MESSAGING_SERVICE_SID": "MG1"}
    del env["ERV_TWILIO_FROM"]
    assert Config.from_env(env).twilio.messaging_service_sid == "MG1"


@pytest.mark.parametrize(
    "missing", ["ERV_TWILIO_ACCOUNT_SID", "ERV_TWILIO_AUTH_TOKEN", "ERV_TWILIO_FROM"]
)
def test_twilio_incomplete(missing: str) -> None:
    env = {k: v for k, v in TWILIO.items() if k != missing}
    assert missing in refused(env)


def test_twilio_token_from_a_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("filed-token", encoding="utf-8")
    env = {k: v for k, v in TWILIO.items() if k != "ERV_TWILIO_AUTH_TOKEN"}
    config = Config.from_env({**env, "ERV_TWILIO_AUTH_TOKEN_FILE": str(token)})
    assert config.twilio.auth_token == "filed-token"


def test_notify_complete_and_incomplete() -> None:
    config = Config.from_env({**NOTIFY, "ERV_NOTIFY_BASE_URL": "http://127.0.0.1:9/"})
    assert (config.notify.api_key, config.notify.template_id) == ("key", "tpl")
    assert config.notify.base_url == "http://127.0.0.1:9"
    for missing in ("ERV_NOTIFY_API_KEY", "ERV_NOTIFY_TEMPLATE_ID"):
        assert missing in refused({k: v for k, v in NOTIFY.items() if k != missing})


def test_sms_template_needs_the_link() -> None:
    assert "ERV_SMS_TEMPLATE" in refused({"ERV_SMS_TEMPLATE": "Call us back"})
    custom = "Your link: {link}"
    assert Config.from_env({"ERV_SMS_TEMPLATE": custom}).sms_template == custom


def test_turn_urls_need_a_secret() -> None:
    message = refused({"ERV_TURN_URLS": "turn:turn.example.org:3478"})
    assert "ERV_TURN_URLS" in message and "ERV_TURN_SECRET" in message
    config = Config.from_env({"ERV_TURN_URLS": "turn:t:3478, turns:t:5349",
                              "ERV_TURN_SECRET": "s"})
    assert config.turn_urls == ("turn:t:3478", "turns:t:5349")
    assert config.turn_secret == "s"


def test_validate_checks_a_directly_built_config() -> None:
    with pytest.raises(ConfigError, match="ERV_SMS_GATEWAY"):
        Config(sms_gateway="twilio").validate()
    Config().validate()


def test_monitoring_and_connection_settings() -> None:
    config = Config.from_env({})
    assert (config.metrics_token, config.metrics_listen, config.header_timeout) == ("", "", 10)
    assert config.client_connection_cap == 100  # the node terminates TLS
    assert Config.from_env({"ERV_TLS": "false"}).client_connection_cap == 0  # behind a proxy
    set_ = Config.from_env({"ERV_TLS": "false", "ERV_MAX_CONNECTIONS_PER_CLIENT": "20",
                            "ERV_MAX_CONNECTIONS": "500", "ERV_HEADER_TIMEOUT": "4",
                            "ERV_METRICS_TOKEN": "a" * 32, "ERV_METRICS_LISTEN": "10.0.0.1:9443"})
    assert (set_.client_connection_cap, set_.max_connections, set_.header_timeout) == (20, 500, 4)
    assert (set_.metrics_token, set_.metrics_listen) == ("a" * 32, "10.0.0.1:9443")
    for env in ({"ERV_METRICS_LISTEN": "9443"}, {"ERV_METRICS_LISTEN": "host:99999"},
                {"ERV_METRICS_TOKEN": "short"}, {"ERV_HEADER_TIMEOUT": "0"},
                {"ERV_MAX_CONNECTIONS_PER_CLIENT": "-1"}):
        with pytest.raises(ConfigError):
            Config.from_env(env)
