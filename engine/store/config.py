"""Store-wide settings from <store>/config.toml (or an explicit --config FILE).

    [secrets]
    env = ["OPENAI_API_KEY", "ANTHROPIC_API_KEY"]   # variables whose VALUES are redacted from traces

    [redaction]
    patterns = ["acct-[0-9]{8}"]                     # extra regexes, replaced with [REDACTED]
    max_field_bytes = 16384                          # longer strings are cut with a "…[truncated N bytes]" marker

    [notifiers.oncall]
    type = "pagerduty"
    routing_key_env = "PD_ROUTING_KEY"

    [console.keys]
    kill_run = "K"

    [otel]                                           # OpenTelemetry export (engine/store/otel_config.py)
    endpoint = "http://127.0.0.1:4318"

    [serve]                                          # `flightdeck serve` (engine/serve/)
    token_env = "FLIGHTDECK_API_TOKEN"               # the variable holding the API's bearer token (never the token)

    [runbooks]                                       # the project's runbooks, loaded beside the shipped ones
    dir = "runbooks"                                 # relative to this file (the only place an engine wholly on
                                                     # Postgres can keep runbooks of its own: it has no STORE/)

Unknown keys are errors (a typo must not silently disable redaction). A missing default file means defaults; a
missing explicit file is an error. Errors are InputErrors naming the file, the line (best effort) and the field.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.errors import InputError, InputErrors
from engine.store.files import CONFIG_FILE
from engine.store.otel_config import OtelConfig

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
MAX_CONFIG_BYTES = 1024 * 1024
DEFAULT_TOKEN_ENV = "FLIGHTDECK_API_TOKEN"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretsConfig(Strict):
    env: list[Annotated[str, Field(pattern=ENV_NAME)]] = Field(default_factory=list)


class RedactionConfig(Strict):
    patterns: list[str] = Field(default_factory=list)
    max_field_bytes: int = Field(16 * 1024, ge=256)

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        from engine.store.user_patterns import pattern_problem

        for index, pattern in enumerate(patterns):
            if not pattern:
                raise ValueError(f"pattern {index} is empty (it would match everywhere)")
            # Compiled as the Redactor will use it (wrapped in a group), and timed on probes: a pattern that
            # backtracks catastrophically is refused here, not discovered by the trace writer.
            problem = pattern_problem(pattern)
            if problem is not None:
                raise ValueError(f"pattern {index} {pattern!r} {problem}")
        return patterns


# Notifiers: a discriminated union on `type`. To add a kind, define a model with `type: Literal["..."]` and add
# it to `Notifier` below; the CLI and the notifier runtime dispatch on the model class.
class SlackNotifier(Strict):
    type: Literal["slack"]
    url: str | None = None
    url_env: str | None = Field(None, pattern=ENV_NAME)
    channel: str | None = None


class PagerDutyNotifier(Strict):
    type: Literal["pagerduty"]
    routing_key_env: str = Field(pattern=ENV_NAME)
    url: str = "https://events.pagerduty.com/v2/enqueue"


class WebhookNotifier(Strict):
    type: Literal["webhook"]
    url: str
    headers: dict[str, str] = Field(default_factory=dict)


Notifier = Annotated[SlackNotifier | PagerDutyNotifier | WebhookNotifier, Field(discriminator="type")]
NOTIFIER_TYPES = ("slack", "pagerduty", "webhook")


class ConsoleConfig(Strict):
    # action id -> key binding (Textual key names, e.g. "k", "ctrl+k", "f5")
    keys: dict[str, Annotated[str, Field(min_length=1)]] = Field(default_factory=dict)
    # ring the terminal bell when a tool call starts waiting for approval (FLIGHTDECK_CONSOLE_BELL, when set, wins)
    bell: bool = False


class ServeConfig(Strict):
    # When this variable is set, every API route but /health and /hooks/* needs `Authorization: Bearer <value>`.
    token_env: str = Field(DEFAULT_TOKEN_ENV, pattern=ENV_NAME)


class RunbooksConfig(Strict):
    # A directory of runbook files (*.md). Relative paths are relative to the config file (load_config resolves
    # them, and refuses a directory that is not there: a typo must not silently drop the project's runbooks).
    dir: str | None = Field(None, min_length=1)


class StoreConfig(Strict):
    secrets: SecretsConfig = Field(default_factory=SecretsConfig)
    redaction: RedactionConfig = Field(default_factory=RedactionConfig)
    notifiers: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]+$")], Notifier] = Field(default_factory=dict)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    otel: OtelConfig = Field(default_factory=OtelConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    runbooks: RunbooksConfig = Field(default_factory=RunbooksConfig)

    @property
    def runbooks_dir(self) -> Path | None:
        """The project's runbook directory ([runbooks] dir, made absolute by load_config), or None."""
        return Path(self.runbooks.dir) if self.runbooks.dir is not None else None


def load_config(store_dir: Path, config_file: str | os.PathLike[str] | None = None) -> StoreConfig:
    """The store's settings: `config_file` if given (must exist), else <store_dir>/config.toml if present,
    else defaults. Raises InputError / InputErrors naming file, line and field."""
    if config_file is not None:
        path = Path(config_file)
    else:
        path = store_dir / CONFIG_FILE
        if not path.exists():
            return StoreConfig()
    # Imported here: engine.safe_yaml imports PyYAML (11 ms), which the console's start does not need.
    from engine.safe_yaml import read_input_file

    # Not found, a directory (never silently "no config": that would disable redaction), unreadable, too big.
    raw = read_input_file(path, "config", max_bytes=MAX_CONFIG_BYTES)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start})", file=str(path),
                         line=raw[:exc.start].count(b"\n") + 1) from None
    config = parse_config(text, str(path))
    if config.runbooks.dir is not None:
        config = _with_runbooks_dir(config, text, path)
    return config


def _with_runbooks_dir(config: StoreConfig, text: str, path: Path) -> StoreConfig:
    """[runbooks] dir made absolute (relative to the config file, not to wherever the command runs), or an
    InputError naming the file, line and field when it is not a directory."""
    assert config.runbooks.dir is not None
    directory = Path(config.runbooks.dir).expanduser()
    if not directory.is_absolute():
        directory = path.resolve().parent / directory
    if not directory.is_dir():
        raise InputError(f"not a directory: {directory}", file=str(path), line=_line_of(text, ("runbooks", "dir")),
                         field="runbooks.dir")
    return config.model_copy(update={"runbooks": RunbooksConfig(dir=str(directory))})


def parse_config(text: str, file: str) -> StoreConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column \d+\)", message)
        line = int(match.group(1)) if match else None
        clean = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
        raise InputError(f"invalid TOML: {clean}", file=file, line=line) from exc
    try:
        return StoreConfig.model_validate(raw)
    except ValidationError as exc:
        errors = [_input_error(err, text, file) for err in exc.errors()]
        raise (errors[0] if len(errors) == 1 else InputErrors(errors)) from None


def _input_error(err: Any, text: str, file: str) -> InputError:
    loc = list(err["loc"])
    # Pydantic puts the union tag into the location of a notifier's field errors (notifiers.ops.slack.url);
    # the person wrote notifiers.ops.url.
    if len(loc) >= 3 and loc[0] == "notifiers" and loc[2] in NOTIFIER_TYPES:
        del loc[2]
    from engine.safe_yaml import format_loc

    field = format_loc(tuple(loc))
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown setting"
    elif err["type"] == "union_tag_invalid":
        message = f"unknown notifier type {err['input'].get('type')!r}; use one of {', '.join(NOTIFIER_TYPES)}"
    elif err["type"] == "union_tag_not_found":
        message = f"a notifier needs `type` ({', '.join(NOTIFIER_TYPES)})"
    elif message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return InputError(message, file=file, line=_line_of(text, tuple(loc)), field=field)


_TABLE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:"[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[A-Za-z0-9_\-]+))*)\s*=""")


def _split_key(dotted: str) -> tuple[str, ...]:
    parts = re.findall(r""""([^"]*)"|'([^']*)'|([A-Za-z0-9_\-]+)""", dotted)
    return tuple(a or b or c for a, b, c in parts)


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best-effort line of a setting: the line defining the longest prefix of `loc` (a key, or the [table]
    header it lives in). Good enough for the config files people write; None if nothing matches."""
    target = tuple(str(p) for p in loc if not isinstance(p, int))
    best_len, best_line = 0, None
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        header = _TABLE.match(line)
        if header and not line.lstrip().startswith("[["):
            table = _split_key(header.group(1))
            path = table
        else:
            key = _KEY.match(line)
            if not key:
                continue
            path = table + _split_key(key.group(1))
        common = 0
        for a, b in zip(path, target):
            if a != b:
                break
            common += 1
        # A line counts only if all of it is on the target's path; prefer the deepest, then the first.
        if common == len(path) and common > best_len:
            best_len, best_line = common, number
    return best_line
