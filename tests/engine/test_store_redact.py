"""Redactor: what is redacted, what is kept, truncation markers, and that the cheap pre-check never lets a secret by."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.store.config import parse_config
from engine.store.redact import MIN_SECRET_LENGTH, REDACTED, Redactor

ENV_SECRET = 'hunter2-"quoted"\\back-ünï'
OPENAI_KEY = "sk-proj-Abc123def456GHI789jkl012"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


def _stored(redactor: Redactor, obj: Any) -> Any:
    text = redactor.dumps(obj)
    assert text is not None
    text.encode("utf-8")  # storable: no lone surrogates (those are escaped)
    return json.loads(text)


def test_builtin_patterns() -> None:
    r = Redactor()
    assert r.redact(f"key={OPENAI_KEY} done") == f"key={REDACTED} done"
    assert r.redact("Authorization: Bearer abc.DEF-123_456/xyz=") == f"Authorization: Bearer {REDACTED}"
    assert r.redact(f"aws {AWS_KEY}!") == f"aws {REDACTED}!"
    assert r.redact("GET /x?api_key=s3cr3tvalue&page=2") == f"GET /x?api_key={REDACTED}&page=2"
    assert r.redact('headers: {"X-Api-Key": "abcdef123"}') == f'headers: {{"X-Api-Key": "{REDACTED}"}}'
    assert r.redact("apikey: 'zzzzzz'") == f"apikey: '{REDACTED}'"


def test_ordinary_text_is_untouched() -> None:
    r = Redactor()
    for text in ["the disk-usage-report-for-cluster-a", "task-abcdefghijklmnopqrstuvwxyz", "tokens used: 1234",
                 "bearer of bad news", "AKIA", "keyboard api docs"]:
        assert r.redact(text) == text


def test_env_values_are_redacted_raw_and_inside_json() -> None:
    r = Redactor(secrets=[ENV_SECRET])
    payload = {"note": f"the password is {ENV_SECRET}!", "list": [ENV_SECRET, 1], ENV_SECRET: "as a key"}
    stored = _stored(r, payload)
    assert stored == {"note": f"the password is {REDACTED}!", "list": [REDACTED, 1], REDACTED: "as a key"}
    assert ENV_SECRET not in json.dumps(stored) and "hunter2" not in r.dumps(payload)  # type: ignore[operator]


def test_credential_named_keys_have_their_values_redacted() -> None:
    r = Redactor()
    stored = _stored(r, {"api_key": "plainvalue", "apiKey": "v2", "client_secret": "v3", "password": "pw",
                         "Authorization": "Basic dXNlcjpwYXNz", "nested": {"access_token": "t0k"},
                         "tokens_in": 5, "max_tokens": "100", "token": ""})
    assert stored == {"api_key": REDACTED, "apiKey": REDACTED, "client_secret": REDACTED, "password": REDACTED,
                      "Authorization": REDACTED, "nested": {"access_token": REDACTED},
                      "tokens_in": 5, "max_tokens": "100", "token": ""}


def test_config_driven_redactor(monkeypatch: Any) -> None:
    config = parse_config('[secrets]\nenv = ["MY_SERVICE_TOKEN"]\n[redaction]\npatterns = ["(?i)acct-[0-9]{4}"]\n',
                          "config.toml")
    environ = {"MY_SERVICE_TOKEN": "svc-value-123", "OPENAI_API_KEY": "plain-openai-value", "SHORT": "x"}
    r = Redactor.from_config(config, environ)
    text = "svc-value-123 plain-openai-value ACCT-1234 acct-99"
    assert r.redact(text) == f"{REDACTED} {REDACTED} {REDACTED} acct-99"


def test_short_env_values_are_ignored() -> None:
    config = parse_config('[secrets]\nenv = ["FLAG"]\n', "config.toml")
    r = Redactor.from_config(config, {"FLAG": "t" * (MIN_SECRET_LENGTH - 1)})
    assert r.redact("tttttttttt") == "tttttttttt"


def test_truncation_marker_counts_bytes() -> None:
    r = Redactor(max_field_bytes=1024)
    stored = _stored(r, {"blob": "x" * 5000, "small": "ok"})
    assert stored["blob"] == "x" * 1024 + f"…[truncated {5000 - 1024} bytes]"
    assert stored["small"] == "ok"
    # Multi-byte text is cut on a character boundary and the count is in bytes.
    text = "é" * 1000  # 2000 bytes
    cut = r.truncate(text)
    assert cut == "é" * 512 + "…[truncated 976 bytes]"


def test_redaction_happens_before_truncation() -> None:
    r = Redactor(max_field_bytes=1024)
    text = "a" * 1009 + " " + OPENAI_KEY + "b" * 2000  # the key straddles the cut
    cut = r.clean_text(text)
    assert cut is not None and "sk-proj" not in cut and cut.startswith("a" * 1009 + " " + REDACTED)


def test_whole_payload_cap() -> None:
    r = Redactor(max_field_bytes=1024)
    payload = {f"k{i}": "v" * 1000 for i in range(10)}  # every field fits, the whole does not
    stored = _stored(r, payload)
    assert isinstance(stored, str) and stored.endswith("bytes]") and "…[truncated " in stored
    assert len(r.dumps(payload)) < 4 * 1024 + 100  # type: ignore[arg-type]


def test_odd_values_never_raise() -> None:
    r = Redactor()
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    assert "_unserialisable" in _stored(r, cyclic)

    class Thing:
        def __str__(self) -> str:
            return f"thing with {OPENAI_KEY}"

    assert _stored(r, {"obj": Thing(), "set": {1}, "tuple": (1, 2), 3: "int key"}) == {
        "obj": f"thing with {REDACTED}", "set": [1], "tuple": [1, 2], "3": "int key"}
    assert r.dumps(None) is None
    assert r.clean_column("lone \ud800 surrogate") == "lone ? surrogate"


def test_nothing_changed_means_no_copy() -> None:
    r = Redactor()
    payload = {"a": [1, "two", {"b": None}], "c": 1.5}
    assert r.clean(payload) is payload


_SECRETS = [ENV_SECRET, OPENAI_KEY, AWS_KEY]
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
_leaf = st.one_of(st.none(), st.booleans(), st.integers(), _text)
_payload = st.recursive(_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(_text, inner, max_size=4)), max_leaves=12)


def _plant(obj: Any, secret: str, where: int) -> Any:
    """Put `secret` inside some string of `obj` (or wrap obj so there is one)."""
    return {"wrapper": obj, "note": f"prefix\n{secret}\tsuffix" if where % 2 else secret, "n": where}


@settings(max_examples=100, deadline=None)
@given(payload=_payload, secret_index=st.integers(0, len(_SECRETS) - 1), where=st.integers(0, 9))
def test_planted_secret_never_survives_and_json_stays_valid(payload: Any, secret_index: int, where: int) -> None:
    r = Redactor(secrets=[ENV_SECRET])
    secret = _SECRETS[secret_index]
    text = r.dumps(_plant(payload, secret, where))
    assert text is not None
    decoded = json.loads(text)
    assert secret not in json.dumps(decoded, ensure_ascii=False)


@settings(max_examples=100, deadline=None)
@given(payload=_payload)
def test_fast_path_round_trips_clean_payloads(payload: Any) -> None:
    r = Redactor()
    text = r.dumps(payload)
    if payload is None:
        assert text is None  # stored as SQL NULL
        return
    assert text is not None
    decoded = json.loads(text)
    # With no secret-like content the stored value is exactly the payload (dict keys become strings in JSON).
    if REDACTED not in text:
        assert decoded == json.loads(json.dumps(payload))


def test_unicode_secret_values_are_found_whatever_their_case_context() -> None:
    secret = "ΚΛΕΙΔΙΣ"  # ends in a capital sigma: it lowers to "ς" alone but to "σ" when a letter follows
    assert secret.lower() not in f"{secret}ΑΒ".lower()  # why a lower-cased pre-check would miss it
    r = Redactor(secrets=[secret])
    assert r.redact(f"x{secret}ΑΒ") == f"x{REDACTED}ΑΒ"
    stored = _stored(r, {"note": f"pre {secret}ΑΒ", "list": [f"{secret}Σ"]})
    assert stored == {"note": f"pre {REDACTED}ΑΒ", "list": [f"{REDACTED}Σ"]}
    assert r.dumps_many([{"a": f"{secret}b"}, None, "plain"]) == [
        json.dumps({"a": f"{REDACTED}b"}, separators=(",", ":")), None, '"plain"']


def test_dumps_many_matches_dumps() -> None:
    r = Redactor(secrets=[ENV_SECRET], max_field_bytes=512)
    payloads: list[Any] = [{"ok": 1}, None, {"api_key": "zzz"}, f"text {OPENAI_KEY}", {"big": "b" * 2000}, [1, 2],
                           {"nested": {"x": ENV_SECRET}}]
    assert r.dumps_many(payloads) == [r.dumps(p) for p in payloads]
    assert r.dumps_many([{"ok": 1}, {"fine": [True, None]}]) == ['{"ok":1}', '{"fine":[true,null]}']


def test_payloads_are_stored_as_utf8_and_lone_surrogates_cannot_fail_a_batch() -> None:
    r = Redactor(max_field_bytes=64)
    assert json.loads(r.dumps({"text": "ünïcode ✓"})) == {"text": "ünïcode ✓"}  # type: ignore[arg-type]
    assert json.loads(r.dumps({"bad": "lone \ud800"})) == {"bad": "lone \ud800"}  # type: ignore[arg-type]
    # 30 three-byte characters are 90 UTF-8 bytes: cut by bytes, not by characters.
    cut = _stored(r, {"text": "✓" * 30})["text"]
    assert cut.startswith("✓" * 21) and "truncated" in cut and len(cut.split("…")[0].encode()) <= 64
    texts = r.dumps_many([{"a": "✓" * 30}, {"b": "short"}])
    assert "truncated" in json.loads(texts[0])["a"] and json.loads(texts[1]) == {"b": "short"}  # type: ignore[arg-type]
