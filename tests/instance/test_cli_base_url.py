"""base_url and bind agree: `init --bind` without --base-url publishes under the bind's
own address (a bind on every address needs --base-url), and `serve` refuses a loopback
base_url that is not where it listens. Before, `init --bind 127.0.0.1:9000` kept
base_url at port 8000, so keys and links named a server that was not there."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from instance.cli import main
from instance.config import Settings, unreachable_base_url

FAST = {"FIELDCAST_ARGON2_TIME_COST": "1", "FIELDCAST_ARGON2_MEMORY_KIB": "8",
        "FIELDCAST_ARGON2_PARALLELISM": "1"}


def _cli(capsys: pytest.CaptureFixture[str], *argv: str, env: dict[str, str] | None = None
         ) -> tuple[int, str]:
    try:
        main(list(argv), {**FAST, **(env or {})})
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def _written(data: Path) -> tuple[str, str]:
    config = tomllib.loads((data / "fieldcast.toml").read_text())
    return config["base_url"], config["bind"]


@pytest.mark.parametrize(("bind", "base_url", "problem"), [
    ("127.0.0.1:9000", "http://127.0.0.1:9000", False),
    ("127.0.0.1:9000", "http://localhost:9000", False),
    ("localhost:9000", "http://127.0.0.1:9000", False),
    ("0.0.0.0:9000", "http://127.0.0.1:9000", False),
    ("[::]:9000", "http://[::1]:9000", False),
    ("10.0.0.5:9000", "https://tracker.example.org", False),  # a proxy may be in front
    ("0.0.0.0:9000", "http://192.0.2.7", False),  # another machine's view: not ours to say
    ("127.0.0.1:9000", "http://127.0.0.1:8000", True),
    ("127.0.0.1:9000", "http://127.0.0.1", True),
    ("127.0.0.1:9000", "https://127.0.0.1:9000", True),  # serve has no TLS
    ("127.0.0.1:9000", "http://[::1]:9000", True),
    ("10.0.0.5:9000", "http://127.0.0.1:9000", True),
])
def test_which_base_urls_cannot_be_this_server(bind: str, base_url: str, problem: bool
                                               ) -> None:
    found = unreachable_base_url(Settings(bind=bind, base_url=base_url).replace())
    assert (found is not None) == problem, found


def test_init_and_serve_keep_base_url_and_bind_consistent(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = tmp_path / "one"
    assert _cli(capsys, "init", "--data-dir", str(one), "--bind", "127.0.0.1:9123") == (0, "")
    assert _written(one) == ("http://127.0.0.1:9123", "127.0.0.1:9123")
    six = tmp_path / "six"
    assert _cli(capsys, "init", "--data-dir", str(six), "--bind", "[::1]:9124")[0] == 0
    assert _written(six) == ("http://[::1]:9124", "[::1]:9124")

    # Every address names no URL; a contradiction is refused: one line, nothing made.
    refused = [
        (("--bind", "0.0.0.0:9125"), "give the public one with --base-url"),
        (("--bind", "[::]:9125"), "give the public one with --base-url"),
        (("--bind", "127.0.0.1:9125", "--base-url", "http://127.0.0.1:8000"),
         "Set base_url to http://127.0.0.1:9125"),
    ]
    for options, message in refused:
        code, err = _cli(capsys, "init", "--data-dir", str(tmp_path / "no"), *options)
        assert code == 2 and err.count("\n") == 1 and message in err, (options, err)
        assert not (tmp_path / "no").exists()
    code, err = _cli(capsys, "init", "--data-dir", str(tmp_path / "no"),
                     env={"FIELDCAST_BIND": "0.0.0.0:9125"})
    assert code == 2 and "--base-url" in err
    public = tmp_path / "public"
    assert _cli(capsys, "init", "--data-dir", str(public), "--bind", "0.0.0.0:9125",
                "--base-url", "https://tracker.example.org")[0] == 0
    assert _written(public) == ("https://tracker.example.org", "0.0.0.0:9125")

    # The file is written once: init no longer ignores options that contradict it.
    code, err = _cli(capsys, "init", "--data-dir", str(one), "--exist-ok",
                     "--bind", "127.0.0.1:9999")
    assert code == 2 and "already sets bind = '127.0.0.1:9123'" in err, err
    assert _cli(capsys, "init", "--data-dir", str(one), "--exist-ok",
                "--bind", "127.0.0.1:9123")[0] == 0

    # serve refuses before it binds anything, from the command line or the environment.
    for argv, env in ((("--bind", "127.0.0.1:9130"), {}),
                      ((), {"FIELDCAST_BASE_URL": "https://127.0.0.1:9123"})):
        code, err = _cli(capsys, "serve", "--data-dir", str(one), *argv, env=env)
        assert code == 2 and err.count("\n") == 1, err
        assert err.startswith("fieldcast: error: base_url ") and "Set base_url to" in err
