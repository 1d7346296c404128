"""Settings: one typed object, loaded from a TOML file and then the environment.

Precedence, lowest first: the defaults below, ``{data_dir}/fieldcast.toml`` (or the file
named by ``--config`` / ``FIELDCAST_CONFIG``), then ``FIELDCAST_<NAME>`` environment
variables, then the command line. The fields of `Settings` are the only list of settings:
their annotations are the types every source is checked against, and a name no field
claims is refused, whether it comes from the file or the environment. Nobody reads
``os.environ`` but the entry points (`instance.cli`, `instance.asgi`), which pass it here;
below them the object is passed down.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit

CONFIG_FILENAME = "fieldcast.toml"
ENV_PREFIX = "FIELDCAST_"
# Variables under ENV_PREFIX that name no setting and are not refused: the loader's own
# (which file to read), and those the test harness reads for itself, which reach the
# server processes it starts because they inherit its environment.
NOT_SETTINGS = frozenset({
    "FIELDCAST_CONFIG",
    "FIELDCAST_TEST_POSTGRES_URL",  # tests/conftest.py, bench/writes.py
    "FIELDCAST_TEST_REDIS_URL",  # tests/hub/test_multiprocess.py
    "FIELDCAST_CHROMIUM",  # tests/browser/conftest.py
})


class ConfigError(Exception):
    """The configuration is unusable; the message says which setting and why."""


@dataclass(frozen=True)
class Settings:
    # Where the database (on SQLite), keys and the config file live.
    data_dir: Path = Path("data")
    # SQLAlchemy async URL; empty means SQLite in data_dir.
    # PostgreSQL: postgresql+asyncpg://user@host:5432/dbname
    database_url: str = ""
    # The public URL of this instance: used in links, key ids and federation topics.
    base_url: str = "http://127.0.0.1:8000"
    # host:port that `fieldcast serve` binds.
    bind: str = "127.0.0.1:8000"
    # Hypercorn worker processes. More than one needs PostgreSQL (SQLite is one writer).
    workers: int = 1
    instance_name: str = "fieldcast"
    # Wakes the live hubs of other worker processes: empty for one process, a Redis URL
    # such as redis://127.0.0.1:6379/0, or "postgresql" for LISTEN/NOTIFY on the database.
    broker_url: str = ""
    # How often each process's hub reads the change log when no wake-up came: the bound
    # on delay for changes made by other processes without a broker (the CLI).
    live_poll_ms: int = 1000
    # The most of a process's time that sending live frames may take when saves come
    # faster than frames can follow (1-100): less leaves more time to saves and puts
    # more updates in each frame, at the price of latency (bench/fanout.py).
    live_frame_percent: int = 30
    # permessage-deflate on /live. Off: at 1000 sockets it cost 2.5x the server CPU per
    # single-update frame and ~3x the memory per socket, for frames 11x smaller
    # (bench/fanout.py, PROTOCOL.md). Turn it on where bandwidth costs more than CPU.
    live_deflate: bool = False
    # Group commit: concurrent saves in one process share one transaction and one commit
    # (each with its own If-Match check, version, event id and answer after the commit).
    # Off, every save commits alone (bench/writes.py measures both).
    group_commit: bool = True
    # Requests with a larger body are refused with 413 before they are parsed.
    max_body_bytes: int = 1024 * 1024
    # Browser sessions expire after this long without being renewed by a login.
    session_ttl_seconds: int = 14 * 24 * 3600
    # Argon2id cost. The defaults are argon2-cffi's RFC 9106 "low memory" profile;
    # tests lower them because hashing dominates their run time otherwise.
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 64 * 1024
    argon2_parallelism: int = 4
    # Federation hub. Outgoing federation requests (verification and denial GETs to
    # callbacks, key documents) refuse private, loopback and link-local addresses and
    # plain http unless these allow them (tests and closed networks).
    allow_private_callbacks: bool = False
    allow_http_callbacks: bool = False
    # Lease bounds for subscriptions to this hub, in seconds (REC §8.2: 10 days default).
    hub_lease_min_seconds: int = 60
    hub_lease_default_seconds: int = 10 * 24 * 3600
    hub_lease_max_seconds: int = 31 * 24 * 3600
    # Subscriber side: the lease this instance asks of other instances' hubs, and the age
    # after which a linked item is fetched again even without a notification.
    remote_lease_seconds: int = 10 * 24 * 3600
    remote_sync_max_age_seconds: int = 6 * 3600
    # A foreign instance's key document is fetched again (on an unknown keyId, or a
    # signature that fails with a cached key) at most this often per origin, so forged
    # requests cannot make this instance hammer a peer.
    key_refetch_seconds: int = 60
    # Test-only switches (tests/harness), off by default. Only the operator sets them
    # (this file, the environment, the command line); no request can, and nothing is
    # read from a request to decide them (PROTOCOL.md, "Test switches").
    # A file name in data_dir; when set and the file exists, the federation callback
    # misbehaves as it says ({"callback": "error"} or {"callback": "hang", "seconds": N}).
    test_faults_file: str = ""
    # Added to the Unix time this instance signs and checks HTTP signatures with.
    test_clock_offset_seconds: int = 0
    # An API answer its OpenAPI description does not allow is a bug: with this on it is
    # a 500 (the tests catch it); off, it is logged and sent, so users never pay for it.
    test_strict_answers: bool = False

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'fieldcast.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def secure_cookies(self) -> bool:
        return urlsplit(self.base_url).scheme == "https"

    def replace(self, **changes: Any) -> Settings:
        return validate(dataclasses.replace(self, **changes))


# Each setting's type, from the annotations above: the one table of settings.
_TYPES: dict[str, type] = {
    f.name: get_type_hints(Settings)[f.name] for f in fields(Settings)
}


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _coerce(name: str, raw: Any, source: str) -> Any:
    """`raw` as the type of setting `name`: a TOML value, or text from the environment."""
    kind = _TYPES[name]
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE + _FALSE:
            return raw.strip().lower() in _TRUE
        raise ConfigError(f"{name} in {source} must be true or false, got {raw!r}")
    if kind is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{name} in {source} must be a whole number, got {raw!r}")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} in {source} must be a whole number, got {raw!r}") from None
    if kind is Path:
        return Path(str(raw))
    if not isinstance(raw, str):
        raise ConfigError(f"{name} in {source} must be a string, got {raw!r}")
    return raw


def _refuse_unknown(names: Iterable[str], source: str, *, prefix: str = "") -> None:
    """Refuse names that no setting claims, so that a typo ("databse_url") is an error
    instead of a silently ignored line; each with the setting it most likely meant."""
    unknown = sorted(names)
    if not unknown:
        return
    described = []
    for name in unknown:
        # Compared without the prefix, which every candidate shares.
        bare = name.removeprefix(prefix).lower()
        close = difflib.get_close_matches(bare, list(_TYPES), n=1, cutoff=0.6)
        meant = (prefix + close[0].upper() if prefix else close[0]) if close else None
        described.append(f"{name} (did you mean {meant}?)" if meant else name)
    known = ", ".join(sorted(_TYPES))
    spelled = f" ({prefix}<NAME> in the environment)" if prefix else ""
    raise ConfigError(f"unknown setting(s): {', '.join(described)} in {source}. "
                      f"Known settings: {known}{spelled}")


def validate(settings: Settings) -> Settings:
    for name, kind in _TYPES.items():
        value = getattr(settings, name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{name} must be of type {kind.__name__}, got {value!r}")
    parts = urlsplit(settings.base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"base_url must be an absolute http(s) URL such as https://tracker.example.org, "
            f"got {settings.base_url!r}"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError("base_url must not have a path, query or fragment")
    if settings.base_url.endswith("/"):
        settings = dataclasses.replace(settings, base_url=settings.base_url.rstrip("/"))
    host, sep, port = settings.bind.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"bind must be host:port, got {settings.bind!r}")
    for name in ("workers", "max_body_bytes", "session_ttl_seconds", "live_poll_ms",
                 "live_frame_percent", "argon2_time_cost", "remote_lease_seconds",
                 "remote_sync_max_age_seconds", "key_refetch_seconds",
                 "argon2_memory_kib", "argon2_parallelism"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(settings, name)}")
    url = settings.effective_database_url
    if not (url.startswith("sqlite+aiosqlite://") or url.startswith("postgresql+asyncpg://")):
        raise ConfigError(
            "database_url must start with sqlite+aiosqlite:// or postgresql+asyncpg://, "
            f"got {url.split('://')[0]}://…"
        )
    faults = settings.test_faults_file
    if faults and (Path(faults).name != faults or faults in (".", "..")):
        raise ConfigError("test_faults_file must be a bare file name in the data directory, "
                          f"got {faults!r}")
    broker = settings.broker_url
    if broker and broker != "postgresql" and not broker.startswith(("redis://", "rediss://")):
        raise ConfigError(
            "broker_url must be empty (one process), a redis:// URL, or \"postgresql\" "
            f"(LISTEN/NOTIFY on the database), got {broker!r}"
        )
    if not (1 <= settings.hub_lease_min_seconds <= settings.hub_lease_default_seconds
            <= settings.hub_lease_max_seconds):
        raise ConfigError(
            "hub leases need 1 <= hub_lease_min_seconds <= hub_lease_default_seconds <= "
            f"hub_lease_max_seconds, got {settings.hub_lease_min_seconds}, "
            f"{settings.hub_lease_default_seconds}, {settings.hub_lease_max_seconds}"
        )
    if settings.live_frame_percent > 100:
        raise ConfigError("live_frame_percent is a share of the time, 1 to 100, "
                          f"got {settings.live_frame_percent}")
    if broker == "postgresql" and settings.is_sqlite:
        raise ConfigError('broker_url = "postgresql" needs a PostgreSQL database_url')
    if settings.workers > 1 and settings.is_sqlite:
        raise ConfigError(
            "workers > 1 needs PostgreSQL: SQLite allows one writer process. "
            "Set database_url to a postgresql+asyncpg:// URL or use workers = 1."
        )
    return settings


@dataclass(frozen=True)
class Location:
    """Where the settings are read from, before any file is read."""

    data_dir: Path
    config_file: Path
    data_dir_given: bool  # by the caller or FIELDCAST_DATA_DIR (else the default)
    config_given: bool  # by the caller or FIELDCAST_CONFIG (else DATA_DIR/fieldcast.toml)


def locate(*, environ: Mapping[str, str], data_dir: str | Path | None = None,
           config_file: str | Path | None = None) -> Location:
    """The data directory and config file `load_settings` reads, from the same arguments.
    (A config file may name another data_dir; only the loaded settings say that.)"""
    if data_dir is None:
        data_dir = environ.get(f"{ENV_PREFIX}DATA_DIR")
    base_dir = Path(data_dir) if data_dir is not None else Settings.data_dir
    if config_file is None:
        config_file = environ.get(f"{ENV_PREFIX}CONFIG")
    path = Path(config_file) if config_file else base_dir / CONFIG_FILENAME
    return Location(base_dir, path, data_dir is not None, bool(config_file))


def load_settings(
    *,
    environ: Mapping[str, str],
    data_dir: str | Path | None = None,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from defaults, the TOML file, the environment `environ` (the
    caller's: this module never reads os.environ) and overrides from the command line."""
    env_names = [n for n in environ if n.startswith(ENV_PREFIX) and n not in NOT_SETTINGS]
    _refuse_unknown(
        (n for n in env_names if n.removeprefix(ENV_PREFIX).lower() not in _TYPES
         or n != ENV_PREFIX + n.removeprefix(ENV_PREFIX).lower().upper()),
        "the environment", prefix=ENV_PREFIX,
    )
    values: dict[str, Any] = {}
    where = locate(environ=environ, data_dir=data_dir, config_file=config_file)
    if where.data_dir_given:
        values["data_dir"] = where.data_dir
    path = where.config_file
    if where.config_given and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.is_file():
        try:
            with path.open("rb") as fh:
                loaded = tomllib.load(fh)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        _refuse_unknown((key for key in loaded if key not in _TYPES), str(path))
        for key, raw in loaded.items():
            # data_dir from the command line or environment wins over the file.
            if key == "data_dir" and "data_dir" in values:
                continue
            values[key] = _coerce(key, raw, str(path))

    for env_name in env_names:
        name = env_name.removeprefix(ENV_PREFIX).lower()
        if name != "data_dir":
            values[name] = _coerce(name, environ[env_name], f"environment variable {env_name}")
    for name, raw in (overrides or {}).items():
        if raw is not None:
            values[name] = _coerce(name, raw, "command line")
    return validate(Settings(**values))


def bind_address(bind: str) -> tuple[str, int]:
    """(host, port) of a validated ``bind``; an IPv6 host without its brackets."""
    host, _, port = bind.rpartition(":")
    return host.strip("[]").lower(), int(port)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_loopback(host: str) -> bool:
    ip = _ip(host)
    return ip.is_loopback if ip is not None else (host == "localhost"
                                                  or host.endswith(".localhost"))


def _every_address(host: str) -> bool:
    ip = _ip(host)
    return ip is not None and ip.is_unspecified


def base_url_for_bind(bind: str) -> str | None:
    """The base URL that `fieldcast init` writes when none is given: the address `bind`
    listens on. None for a bind on every address (0.0.0.0, ::): it names no host that
    others could use, so the public URL has to be given."""
    host, port = bind_address(bind)
    if _every_address(host):
        return None
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def unreachable_base_url(settings: Settings) -> str | None:
    """Why ``base_url`` cannot be this server listening at ``bind``, when that is
    certain; else None.

    Certain only for a loopback base URL (127.0.0.0/8, ::1, localhost): only this
    machine reaches it, so nothing can stand between, and it must be this server's
    own address, port and (plain http) scheme. Any other base URL may be a proxy or a
    name in front of the bind, and is taken as given.
    """
    parts = urlsplit(settings.base_url)
    host = (parts.hostname or "").lower()
    if not _is_loopback(host):
        return None
    bind_host, bind_port = bind_address(settings.bind)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    listens = (_every_address(bind_host) or bind_host == host
               or (_is_loopback(bind_host) and "localhost" in (host, bind_host)))
    if parts.scheme == "http" and port == bind_port and listens:
        return None
    suggest = base_url_for_bind(settings.bind) or f"http://127.0.0.1:{bind_port}"
    why = ("fieldcast serve speaks plain http" if parts.scheme == "https"
           else "that is not where this server listens")
    return (f"base_url {settings.base_url} is on this machine only, but {why} (bind "
            f"{settings.bind}): links, key ids and federation topics would name another "
            f"server. Set base_url to {suggest}, or to the public URL of a proxy in front")


def render_toml(settings: Settings) -> str:
    """The config file `fieldcast init` writes: every setting, so it teaches itself."""
    lines = ["# fieldcast configuration. Environment variables FIELDCAST_<NAME> override it."]
    for name in _TYPES:
        if name == "data_dir":
            continue
        value = getattr(settings, name)
        if isinstance(value, str):
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'{name} = "{escaped}"')
        elif isinstance(value, bool):
            lines.append(f"{name} = {'true' if value else 'false'}")
        else:
            lines.append(f"{name} = {value}")
    return "\n".join(lines) + "\n"
