"""Every command run on a directory that is not an instance says so in one line and exits
2, creating nothing: found by walking the parser, so a new command is covered the day it
is added. Before, `tracker list` on a missing directory printed a traceback, and on an
empty one silently created a database without config, keys or admin."""

from __future__ import annotations

import argparse
import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from instance.cli import build_parser, main
from instance.db import make_engine

# The commands that make an instance, and so run where there is none.
MAKE_AN_INSTANCE = {("init",), ("demo",)}


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)),
                None)


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
              ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    sub = _subparsers(parser)
    if sub is None:
        yield prefix, parser
        return
    for name, child in sub.choices.items():
        yield from _commands(child, (*prefix, name))


def _argv(path: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    """The command with a value for each of its required arguments."""
    argv = list(path)
    for action in parser._actions:
        required = not action.option_strings and action.nargs not in ("?", "*")
        if not (required or action.required):
            continue
        value = str(next(iter(action.choices))) if action.choices else "1"
        argv += [*action.option_strings[:1], value]
    return argv


COMMANDS = [(path, _argv(path, p)) for path, p in _commands(build_parser())
            if path not in MAKE_AN_INSTANCE]


def test_the_walk_finds_every_command() -> None:
    found = {path for path, _ in _commands(build_parser())}
    assert MAKE_AN_INSTANCE <= found
    assert {("serve",), ("tracker", "list"), ("keys", "rotate"), ("item", "link")} <= found
    # Marking a command as one that makes an instance is a decision this test records.
    marked = {path for path, p in _commands(build_parser())
              if p.get_default("creates_instance")}
    assert marked == MAKE_AN_INSTANCE


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port someone listens on: a `serve` that got past the check fails to
    bind instead of serving for good."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _run(argv: list[str], capsys: pytest.CaptureFixture[str], env: dict[str, str]
         ) -> tuple[int | str | None, str]:
    with pytest.raises(SystemExit) as exit_:
        main(argv, env)
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing", "empty", "file", "config only"])
def test_every_command_refuses_what_is_not_an_instance(
        case: str, tmp_path: Path, held_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    root.mkdir()
    data = root / "data"
    env = {"FIELDCAST_BIND": f"127.0.0.1:{held_port}"}
    if case == "empty":
        data.mkdir()
    elif case == "file":
        data.write_text("not a directory")
    elif case == "config only":  # fieldcast.toml but no database: init did not finish
        data.mkdir()
        (data / "fieldcast.toml").write_text('instance_name = "half"\n')
    before = _files(root)
    for path, argv in COMMANDS:
        code, err = _run([*argv, "--data-dir", str(data)], capsys, env)
        assert code == 2, (path, err)
        assert err.count("\n") == 1 and err.startswith("fieldcast: error: "), (path, err)
        if case != "config only":
            assert "is not a fieldcast instance" in err, (path, err)
            assert f"create one with: fieldcast init --data-dir {data}" in err, (path, err)
        else:
            assert "is not set up; set it up with: fieldcast init" in err, (path, err)
        assert _files(root) == before, path
    # The data directory from the environment is checked the same way.
    code, err = _run(["tracker", "list"], capsys, {**env, "FIELDCAST_DATA_DIR": str(data)})
    assert code == 2 and err.count("\n") == 1 and _files(root) == before


async def _sql(url: str, *statements: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


def test_broken_config_and_database_get_one_line(
        tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "inst"
    data.mkdir()
    config = data / "fieldcast.toml"
    cases: list[tuple[bytes, str]] = [
        (b"\xff\xfe not text", "is not valid TOML"),
        (b"workers = [", "is not valid TOML"),
        (b"databse_url = 'x'", "unknown setting(s): databse_url"),
    ]
    for content, message in cases:
        config.write_bytes(content)
        code, err = _run(["user", "list", "--data-dir", str(data)], capsys, {})
        assert code == 2 and err.count("\n") == 1 and message in err, err
    config.write_text(f'database_url = "{database_url}"\n')
    if database_url.startswith("sqlite"):
        # Not a database at all; and an empty file (what a bare connect would leave).
        db_file = Path(database_url.split(":///", 1)[1])
        saved = db_file.read_bytes()
        for content, message in ((b"\x00garbage" * 500, "file is not a database"),
                                 (b"", "is an empty file")):
            db_file.write_bytes(content)
            code, err = _run(["tracker", "list", "--data-dir", str(data)], capsys, {})
            assert code == 2 and err.count("\n") == 1 and message in err, err
            assert db_file.read_bytes() == content
        db_file.write_bytes(saved)
    # A database a newer fieldcast migrated: refused, not "migrated" downwards or broken.
    asyncio.run(_sql(database_url, "UPDATE alembic_version SET version_num = '9999'"))
    code, err = _run(["tracker", "list", "--data-dir", str(data)], capsys, {})
    assert code == 2 and err.count("\n") == 1 and "at migration 9999" in err, err
    # A database without the schema (a new PostgreSQL database nobody ran init for).
    asyncio.run(_sql(database_url, "DROP TABLE alembic_version"))
    code, err = _run(["tracker", "list", "--data-dir", str(data)], capsys, {})
    assert code == 2 and "has no fieldcast schema" in err, err
