"""Redaction and truncation of everything that goes into traces.db.

Works on the payload's string values (and keys), so a match can never straddle a JSON escape or break the
document's syntax. Runs on the trace writer's thread, never on the engine's, but it still runs for every row, so:
a payload is first serialised as is and its JSON text checked with plain substring tests that are a SUPERSET of
every rule below (a secret inside a string value always leaves one of those substrings in the JSON text); only a
payload that trips one is walked and cleaned string by string with the exact regexes. Extra config patterns cannot
be pre-checked that way (JSON escaping may hide their match), so with any configured, every payload is walked.

What is redacted, each replaced by `[REDACTED]`:
- the VALUES of environment variables named in config [secrets].env, and OPENAI_API_KEY's whenever it is set
  (values shorter than MIN_SECRET_LENGTH are ignored: redacting "true" everywhere would wreck every trace);
- OpenAI-style keys (sk-...), `Bearer <token>` (the word Bearer is kept), AWS access key ids (AKIA/ASIA...),
  `api_key=...` / `api-key: ...` / `apikey="..."` (the name is kept);
- the string value of any dict key named like a credential (api_key, apiKey, x-api-key, secret, client_secret,
  password, token, access_token, authorization, private_key), since in structured payloads the name and the
  value are separate strings that no text pattern sees together;
- config [redaction].patterns (whole match replaced; numbered backreferences are not supported because each
  pattern is wrapped in a named group). With any configured, the whole alternation runs on the `regex` package under
  a time bound (engine.store.user_patterns): a string whose matching runs out of time is stored as
  `[REDACTED: redaction pattern timed out]`, never unredacted and never stalling the writer.
Strings longer than max_field_bytes (UTF-8) are cut with a `…[truncated N bytes]` marker after redaction (so a cut
never leaves half a secret unmatched); a whole payload whose JSON is still longer than MAX_PAYLOAD_FACTOR x
max_field_bytes is stored as a JSON string holding its cut text.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    from engine.store.config import StoreConfig

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 6
DEFAULT_MAX_FIELD_BYTES = 16 * 1024
MAX_PAYLOAD_FACTOR = 4
ALWAYS_SECRET_ENV = ("OPENAI_API_KEY",)

# (prefix kept in the output, secret replaced). Prefixes let an operator still see WHAT was redacted.
BUILTIN_PATTERNS: tuple[tuple[str, str], ...] = (
    # OpenAI keys: sk-..., sk-proj-..., sk-svcacct-...; not inside a longer word ("task-...").
    ("", r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_\-]{16,}"),
    (r"\b[Bb][Ee][Aa][Rr][Ee][Rr]\s+", r"[A-Za-z0-9\-._~+/]{8,}=*"),
    ("", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    (r"\b[Aa][Pp][Ii][_\-]?[Kk][Ee][Yy][\"']?\s*[=:]\s*[\"']?", r"[^\s\"'&,;{}\[\]]+"),
)
# Lower-cased substrings at least one of which every built-in match contains.
_BUILTIN_MARKERS = ("sk-", "akia", "asia", "bearer", "apikey", "api_key", "api-key")

SECRET_KEY = re.compile(r"(?ai)(?:^|[_\-.])(?:api[_\-]?key|apikey|secret|password|passwd|token|authorization|"
                        r"private[_\-]?key)$")
# In compact JSON a key is always followed by '":' (a string VALUE never is: its quote is followed by , } or ]),
# so one of these lower-cased substrings is present whenever some key matches SECRET_KEY.
_SECRET_KEY_MARKERS = tuple(f'{name}":' for name in ("apikey", "api_key", "api-key", "secret", "password", "passwd",
                                                      "token", "authorization", "private_key", "private-key",
                                                      "privatekey"))
_SECRET_KEY_CACHE_LIMIT = 4096

_GLOBAL_FLAGS = re.compile(r"^\(\?([aiLmsux]+)\)")


def _make_encoder() -> Any:
    """Compact, ASCII-only JSON text. json.dumps builds a new C encoder on every call, which costs more than
    encoding a small dict; build it once. No cycle check: a cycle raises RecursionError, which dumps() handles."""
    from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]

    if c_make_encoder is None:  # no C accelerator (other interpreters): the plain encoder is correct, just slower
        return json.JSONEncoder(separators=(",", ":"), default=str).encode
    encoder = c_make_encoder(None, str, encode_basestring_ascii, None, ":", ",", False, False, True)
    join = "".join
    return lambda obj: join(encoder(obj, 0))


_encode = _make_encoder()
encode_json = _encode


def _make_fast_encoder() -> Any:
    """The trace writer's encoder: pydantic-core's (Rust) serialiser, about 3x faster than the standard library's
    on the writer's small payloads, which are most of its work. It writes UTF-8 (not \\u escapes) and stringifies
    unknown objects like `default=str`; anything it refuses (lone surrogates, invalid bytes, cycles) goes through
    the standard encoder, which escapes or reports it exactly as before."""
    try:
        from pydantic_core import PydanticSerializationError, to_json
    except ImportError:  # the writer process runs without site-packages when pydantic-core is not importable
        return _encode

    def encode(obj: Any) -> str:
        try:
            return to_json(obj, fallback=str).decode()
        except PydanticSerializationError:
            return _encode(obj)

    return encode


_fast_encode: Any = None


def _fast() -> Any:
    global _fast_encode
    if _fast_encode is None:  # imported on first use: the engine process itself never serialises payloads
        _fast_encode = _make_fast_encoder()
    return _fast_encode


def _literal_regex(literals: set[str]) -> re.Pattern[str] | None:
    if not literals:
        return None
    return re.compile("|".join(re.escape(literal) for literal in sorted(literals, key=len, reverse=True)))


def scoped(pattern: str) -> str:
    """A pattern usable inside an alternation: a leading global flag group `(?i)` becomes `(?i:...)`."""
    match = _GLOBAL_FLAGS.match(pattern)
    if match:
        return f"(?{match.group(1)}:{pattern[match.end():]})"
    return pattern


def secret_values(names: Iterable[str], environ: Mapping[str, str]) -> list[str]:
    values = {environ[name] for name in (*ALWAYS_SECRET_ENV, *names) if environ.get(name)}
    return sorted((v for v in values if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)


class Redactor:
    def __init__(self, *, secrets: Iterable[str] = (), patterns: Iterable[str] = (),
                 max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES, builtins: bool = True,
                 match_timeout: float | None = None) -> None:
        secrets = [s for s in secrets if s]
        patterns = list(patterns)
        self.max_field_bytes = max_field_bytes
        self.max_payload_bytes = max_field_bytes * MAX_PAYLOAD_FACTOR
        # A str of this many chars is at most max_field_bytes in UTF-8: shorter ones need no byte count.
        self._surely_short = max_field_bytes // 4
        # Pre-checks, each a superset of what the rules below can match. Secret values are looked for as they
        # are (raw, and JSON-escaped as they appear inside JSON text), case-sensitively: lower-casing is not
        # safe for arbitrary Unicode (a final sigma lowers differently in context). The built-in and key-name
        # markers are ASCII and looked for in lower-cased text, which is exact for ASCII.
        self._always_walk = bool(patterns)
        # Raw, \\u-escaped (the standard encoder) and UTF-8 with only JSON's own escapes (the fast encoder).
        self._secret_forms = tuple({form for s in secrets for form in (s, _encode(s)[1:-1], _fast()(s)[1:-1])})
        text_markers = set(_BUILTIN_MARKERS) if builtins else set()
        json_markers = text_markers | set(_SECRET_KEY_MARKERS)
        self._text_markers = _literal_regex(text_markers)
        self._json_markers = _literal_regex(json_markers)
        # For long texts (a whole batch) `in` tests beat the regex; drop markers another marker already covers.
        self._json_marker_list = tuple(sorted(m for m in json_markers
                                              if not any(o != m and o in m for o in json_markers)))
        parts: list[str] = []
        self._keep_prefix: dict[str, str] = {}  # outer group name -> name of the group holding the secret
        for value in secrets:
            parts.append(f"(?P<_r{len(parts)}>{re.escape(value)})")
        if builtins:
            for prefix, secret in BUILTIN_PATTERNS:
                index = len(parts)
                if prefix:
                    parts.append(f"(?P<_r{index}>(?:{prefix})(?P<_s{index}>{secret}))")
                    self._keep_prefix[f"_r{index}"] = f"_s{index}"
                else:
                    parts.append(f"(?P<_r{index}>{secret})")
        for pattern in patterns:
            parts.append(f"(?P<_r{len(parts)}>{scoped(pattern)})")
        # Operator patterns may backtrack without end on some input: with any, every match is time-bounded.
        self._timeout: float | None = None
        self.timeouts = 0  # strings stored as TIMED_OUT by this redactor
        self._regex: Any = None
        if patterns:
            from engine.store.user_patterns import MATCH_TIMEOUT_S, compile_user_regex

            self._regex = compile_user_regex("|".join(parts))
            self._timeout = MATCH_TIMEOUT_S if match_timeout is None else match_timeout
        elif parts:
            self._regex = re.compile("|".join(parts))
        # Payload keys come from a small vocabulary: remember which are credential names.
        self._secret_keys: dict[str, bool] = {}

    @classmethod
    def from_config(cls, config: StoreConfig, environ: Mapping[str, str] | None = None) -> Redactor:
        env = os.environ if environ is None else environ
        return cls(secrets=secret_values(config.secrets.env, env), patterns=config.redaction.patterns,
                   max_field_bytes=config.redaction.max_field_bytes)

    # -- cheap pre-checks --------------------------------------------------------------------------------------

    @staticmethod
    def _longer_than(text: str, limit: int) -> bool:
        """len(text.encode('utf-8')) > limit, without encoding ASCII text or short text."""
        if len(text) > limit:
            return True
        if len(text) * 4 <= limit or text.isascii():
            return False
        return len(text.encode("utf-8", "surrogatepass")) > limit

    def _has_secret_value(self, text: str) -> bool:
        for form in self._secret_forms:  # noqa: SIM110 (hot path: a plain loop beats any() over a generator)
            if form in text:
                return True
        return False

    def _may_contain_secret(self, text: str) -> bool:
        """False only if no rule can match the string `text`."""
        if self._always_walk or self._has_secret_value(text):
            return True
        markers = self._text_markers
        return markers is not None and markers.search(text.lower()) is not None

    def _json_needs_cleaning(self, text: str) -> bool:
        """False only if no rule can match any string inside the JSON document `text`, and none is too long."""
        if self._always_walk or self._longer_than(text, self.max_field_bytes) or self._has_secret_value(text):
            return True
        markers = self._json_markers
        return markers is not None and markers.search(text.lower()) is not None

    # -- strings -----------------------------------------------------------------------------------------------

    def _replace(self, match: re.Match[str]) -> str:
        group = match.lastgroup
        secret_group = self._keep_prefix.get(group) if group else None
        if secret_group is None:
            return REDACTED
        return match.string[match.start():match.start(secret_group)] + REDACTED

    def redact(self, text: str) -> str:
        regex = self._regex
        if regex is None or not self._may_contain_secret(text):
            return text
        if self._timeout is None:
            return regex.sub(self._replace, text)
        try:
            return regex.sub(self._replace, text, timeout=self._timeout)
        except TimeoutError:
            from engine.store.user_patterns import TIMED_OUT

            # Fail closed: a string we could not finish checking may hold a secret; store none of it.
            self.timeouts += 1
            return TIMED_OUT

    def truncate(self, text: str, limit: int | None = None) -> str:
        limit = self.max_field_bytes if limit is None else limit
        if len(text) <= limit // 4:
            return text
        if text.isascii():
            if len(text) <= limit:
                return text
            return text[:limit] + f"…[truncated {len(text) - limit} bytes]"
        raw = text.encode("utf-8", "surrogatepass")
        if len(raw) <= limit:
            return text
        head = raw[:limit].decode("utf-8", "ignore")
        return head + f"…[truncated {len(raw) - len(head.encode('utf-8', 'surrogatepass'))} bytes]"

    @overload
    def clean_text(self, text: str) -> str: ...
    @overload
    def clean_text(self, text: None) -> None: ...
    def clean_text(self, text: str | None) -> str | None:
        """Redact, then cut (in that order, so a cut can never leave half a secret unmatched)."""
        if text is None:
            return None
        text = self.redact(text)
        return text if len(text) <= self._surely_short else self.truncate(text)

    def clean_column(self, text: str | None) -> str | None:
        """clean_text for a plain TEXT column: also replaces lone surrogates, which SQLite cannot store."""
        if text is None:
            return None
        text = self.clean_text(text)
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                text = text.encode("utf-8", "replace").decode("utf-8")
        return text

    # -- payloads ----------------------------------------------------------------------------------------------

    def _is_secret_key(self, key: str) -> bool:
        cached = self._secret_keys.get(key)
        if cached is None:
            cached = SECRET_KEY.search(key) is not None
            if len(self._secret_keys) < _SECRET_KEY_CACHE_LIMIT:
                self._secret_keys[key] = cached
        return cached

    def clean(self, obj: Any) -> Any:
        """`obj` with every string (values and keys) redacted and cut; containers are copied only if something
        inside changed. Values JSON cannot hold are stringified first so their text is redacted too."""
        kind = type(obj)
        if kind is str:
            return self.clean_text(obj)
        if kind is dict:
            changed = False
            out = {}
            for key, value in obj.items():
                new_key = self.clean_text(key) if type(key) is str else str(key)
                if type(value) is str and value and self._is_secret_key(new_key):
                    new_value: Any = REDACTED
                else:
                    new_value = self.clean(value)
                if new_key is not key or new_value is not value:
                    changed = True
                out[new_key] = new_value
            return out if changed else obj
        if kind is list or kind is tuple:
            items = [self.clean(item) for item in obj]
            if kind is list and all(a is b for a, b in zip(items, obj)):
                return obj
            return items
        if obj is None or kind is int or kind is float or kind is bool:
            return obj
        if isinstance(obj, (str, int, float)):  # subclasses (enums, ...): keep their JSON form
            return obj
        if isinstance(obj, Mapping):
            return self.clean(dict(obj))
        if isinstance(obj, (list, tuple, set, frozenset)):
            return [self.clean(item) for item in obj]
        return self.clean_text(str(obj))

    def dumps(self, obj: Any) -> str | None:
        """The stored JSON text of a payload: redacted, cut, valid UTF-8 (lone surrogates are escaped, so they
        cannot fail a batch), and capped at max_payload_bytes. Never raises."""
        if obj is None:
            return None
        encode = _fast()
        try:
            text = encode(obj)
            if self._json_needs_cleaning(text):
                text = encode(self.clean(obj))
        except (TypeError, ValueError, RuntimeError, RecursionError) as exc:
            # RuntimeError: the caller mutated the dict while we read it; ValueError: a reference cycle.
            text = _encode({"_unserialisable": self.clean_text(f"{type(obj).__name__}: {exc}")})
        if self._longer_than(text, self.max_payload_bytes):
            text = _encode(self.truncate(text, self.max_payload_bytes))
        return text

    def dumps_many(self, objs: list[Any]) -> list[str | None]:
        """[dumps(o) for o in objs], with the pre-check run once over all of them: in the common case (nothing
        secret-like, nothing too long anywhere) that is one regex scan instead of one call per payload."""
        encode = _fast()
        try:
            texts: list[str | None] = [None if obj is None else encode(obj) for obj in objs]
        except (TypeError, ValueError, RuntimeError, RecursionError):
            return [self.dumps(obj) for obj in objs]
        if not self._always_walk:
            present = [text for text in texts if text is not None]
            limit = self.max_field_bytes
            if max(map(len, present), default=0) <= limit and (
                    all(map(str.isascii, present)) or not any(self._longer_than(t, limit) for t in present)):
                # NUL cannot be part of any marker or (escaped) JSON text: no false match spans two payloads.
                joined = "\x00".join(present)
                if not self._has_secret_value(joined):
                    lowered = joined.lower()
                    if not any(marker in lowered for marker in self._json_marker_list):
                        return texts
        return [text if text is None or not self._json_needs_cleaning(text) else self.dumps(obj)
                for obj, text in zip(objs, texts)]
