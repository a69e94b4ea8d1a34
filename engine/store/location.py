"""Where a store is: the one parser of the `--store` value and of $FLIGHTDECK_STORE.

A store is either a directory (the SQLite store: traces.db, control.db, ...) or a PostgreSQL database named by a
`postgresql://` or `postgres://` URL (issue 16, in progress: the trace store's reads and the control plane are served
from Postgres so far). Anything else that looks like a URL (`mysql://...`, `file://...`) is an InputError rather than
a directory with a strange name.

Secrets: a URL may carry a password (`postgresql://user:secret@host/db`, or `?password=secret`). A
PostgresLocation never shows it: `str()`, `repr()` and every message use `masked`, which replaces it with `***`. Only
`dsn` (handed to the driver) holds it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from engine.errors import InputError

POSTGRES_SCHEMES = ("postgresql", "postgres")
ISSUE = "issue 16"
MASK = "***"


@dataclass(frozen=True, slots=True)
class StoreDirectory:
    """The SQLite store: a directory."""

    path: Path

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True, slots=True)
class PostgresLocation:
    """A PostgreSQL store. `dsn` is the URL as given (with any password: for the driver only); `masked` is what
    people see."""

    dsn: str = field(repr=False)
    masked: str
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"PostgresLocation({self.masked!r})"

    def scrub(self, text: str) -> str:
        """`text` (a driver's error message, say) with this URL's password masked wherever it appears."""
        if self.password:
            text = text.replace(self.dsn, self.masked).replace(self.password, MASK)
        return text


StoreLocation = StoreDirectory | PostgresLocation

# The commands a Postgres store serves so far (what PostgresNotSupported and `--store`'s help say).
SERVED_ON_POSTGRES = ("run (durable too), serve, console, runs, trace, usage, engines, store prune, runbooks, "
                      "postmortem, export otlp, eval, resume, reconcile, retry and the control plane's kill, "
                      "release, approvals, safe-mode, incidents and audit")


class PostgresNotSupported(InputError):
    """A command was given a Postgres store it cannot serve yet. The CLI prefixes the command's name."""

    names_command = True

    def __init__(self, location: PostgresLocation, *, served_by: str = SERVED_ON_POSTGRES) -> None:
        super().__init__(f"cannot use a Postgres store yet ({location.masked}): on Postgres only {served_by} work so "
                         f"far ({ISSUE}); pass a store directory instead", field="--store")


def parse_store_location(value: str, *, field_name: str = "--store") -> StoreLocation:
    """A directory path, or a postgresql:// / postgres:// URL. InputError naming `field_name` for an empty value, a
    URL with another scheme, or a Postgres URL without a host or with a bad port."""
    text = value.strip()
    if not text:
        raise InputError("is empty (a store directory, or postgresql://USER@HOST[:PORT]/DATABASE)", field=field_name)
    if "://" not in text:
        return StoreDirectory(Path(value).expanduser())
    scheme = text.split("://", 1)[0].lower()
    if scheme not in POSTGRES_SCHEMES:
        raise InputError(f"unsupported store URL scheme {scheme!r}: a store is a directory path or a "
                         f"postgresql:// URL", field=field_name)
    try:
        parts = urlsplit(text)
        port = parts.port  # ValueError when not a number in range
        host = parts.hostname
    except ValueError as exc:
        raise InputError(f"not a valid Postgres URL ({mask_url(text)}): {exc}", field=field_name) from None
    password = parts.password
    query_password = dict(parse_qsl(parts.query)).get("password")
    location = PostgresLocation(dsn=text, masked=mask_url(text), password=password or query_password)
    if not host:
        raise InputError(f"a Postgres URL needs a host ({location.masked}): postgresql://USER@HOST[:PORT]/DATABASE",
                         field=field_name)
    if port is not None and port == 0:
        raise InputError(f"port 0 in {location.masked}", field=field_name)
    if not parts.path.strip("/"):
        raise InputError(f"a Postgres URL needs a database name ({location.masked}): "
                         "postgresql://USER@HOST[:PORT]/DATABASE", field=field_name)
    return location


def mask_url(url: str) -> str:
    """`url` with the password of its user part and any `password=` query parameter replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("://", 1)[0] + "://" + MASK  # unparseable: show nothing after the scheme
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hostport = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":" + MASK
        netloc = f"{userinfo}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key == "password" for key, _ in pairs):
            query = urlencode([(key, MASK if key == "password" else val) for key, val in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def resolve_store_location(arg: str | os.PathLike[str] | None) -> StoreLocation:
    """The store: the --store argument, else $FLIGHTDECK_STORE, else ./.flightdeck (a directory)."""
    from engine.store.files import DEFAULT_STORE_DIR, STORE_ENV

    if arg is not None and str(arg) != "":
        if isinstance(arg, os.PathLike):
            return StoreDirectory(Path(arg).expanduser())
        return parse_store_location(arg, field_name="--store")
    env = os.environ.get(STORE_ENV)
    if env:
        return parse_store_location(env, field_name=STORE_ENV)
    return StoreDirectory(Path(DEFAULT_STORE_DIR))
