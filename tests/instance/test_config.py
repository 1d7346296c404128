"""Settings: defaults < TOML file < environment < command line, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from instance.config import ConfigError, load_settings, render_toml


def test_precedence(tmp_path: Path) -> None:
    (tmp_path / "fieldcast.toml").write_text(
        'base_url = "https://a.example/"\nbind = "0.0.0.0:9000"\nmax_body_bytes = 10\n'
    )
    s = load_settings(data_dir=tmp_path, environ={"FIELDCAST_BIND": "127.0.0.1:9001"})
    assert s.base_url == "https://a.example"  # trailing slash dropped
    assert s.bind == "127.0.0.1:9001"  # environment beats the file
    assert s.max_body_bytes == 10
    assert s.secure_cookies
    s = load_settings(data_dir=tmp_path, environ={}, overrides={"bind": "127.0.0.1:1"})
    assert s.bind == "127.0.0.1:1"
    assert s.effective_database_url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/fieldcast.db"


@pytest.mark.parametrize("deflate", [False, True])
def test_rendered_file_round_trips(tmp_path: Path, deflate: bool) -> None:
    s = load_settings(data_dir=tmp_path, environ={},
                      overrides={"instance_name": 'a "b"', "live_deflate": deflate})
    (tmp_path / "fieldcast.toml").write_text(render_toml(s))
    again = load_settings(data_dir=tmp_path, environ={})
    assert again == s
    assert again.live_deflate is deflate


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("Yes", True), ("1", True),
                                               ("off", False), ("0", False)])
def test_switches_from_the_environment(tmp_path: Path, raw: str, expected: bool) -> None:
    s = load_settings(data_dir=tmp_path, environ={"FIELDCAST_LIVE_DEFLATE": raw})
    assert s.live_deflate is expected


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ('databse_url = "x"', {}, "unknown setting(s): databse_url"),
        ("workers = 'two'", {}, "workers in"),
        ("", {"FIELDCAST_WORKERS": "2"}, "workers > 1 needs PostgreSQL"),
        ('base_url = "ftp://x"', {}, "base_url must be an absolute http(s) URL"),
        ('base_url = "https://x/tracker"', {}, "must not have a path"),
        ('bind = "8000"', {}, "bind must be host:port"),
        ('database_url = "mysql://x"', {}, "database_url must start with"),
        ("max_body_bytes = 0", {}, "max_body_bytes must be at least 1"),
        ("this is not toml", {}, "is not valid TOML"),
        ('broker_url = "amqp://x"', {}, "broker_url must be empty"),
        ('broker_url = "postgresql"', {}, "needs a PostgreSQL database_url"),
        ("live_poll_ms = 0", {}, "live_poll_ms must be at least 1"),
        ("live_frame_percent = 0", {}, "live_frame_percent must be at least 1"),
        ("", {"FIELDCAST_LIVE_FRAME_PERCENT": "150"}, "live_frame_percent is a share"),
        ("", {"FIELDCAST_LIVE_DEFLATE": "maybe"}, "live_deflate in"),
        ("live_deflate = 1", {}, "must be true or false"),
    ],
)
def test_refusals(tmp_path: Path, toml: str, env: dict[str, str], message: str) -> None:
    (tmp_path / "fieldcast.toml").write_text(toml)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(data_dir=tmp_path, environ=env)


def test_missing_named_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_file=tmp_path / "nope.toml", environ={})


@pytest.mark.parametrize(("name", "meant"), [("FIELDCAST_DATABSE_URL", "FIELDCAST_DATABASE_URL"),
                                             ("FIELDCAST_bind", "FIELDCAST_BIND")])
def test_unknown_environment_variable(tmp_path: Path, name: str, meant: str) -> None:
    message = rf"unknown setting\(s\): {name} \(did you mean {meant}\?\)"
    with pytest.raises(ConfigError, match=message):
        load_settings(data_dir=tmp_path, environ={name: "x"})


def test_variables_that_are_no_setting(tmp_path: Path) -> None:
    # The test suite's own variables reach the servers it starts; other prefixes are not ours.
    s = load_settings(data_dir=tmp_path, environ={
        "FIELDCAST_TEST_POSTGRES_URL": "x", "FIELDCAST_TEST_REDIS_URL": "x",
        "FIELDCAST_CHROMIUM": "x", "FIELDCASTLE": "x", "PATH": "/bin",
    })
    assert s == load_settings(data_dir=tmp_path, environ={})


@pytest.mark.parametrize("name", ["../faults.json", "sub/faults.json", "/tmp/faults", ".."])
def test_the_faults_file_stays_in_the_data_dir(name: str) -> None:
    with pytest.raises(ConfigError, match="bare file name"):
        load_settings(environ={"FIELDCAST_TEST_FAULTS_FILE": name})


def test_test_switches_are_off_by_default() -> None:
    settings = load_settings(environ={})
    assert settings.test_faults_file == "" and settings.test_clock_offset_seconds == 0
