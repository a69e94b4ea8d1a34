"""config.toml: defaults, a full valid file, and errors that name file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import InputError, InputErrors
from engine.store import open_engine_store
from engine.store.config import PagerDutyNotifier, SlackNotifier, StoreConfig, WebhookNotifier, load_config


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_missing_default_file_means_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path)
    assert config == StoreConfig()
    assert config.secrets.env == [] and config.redaction.max_field_bytes == 16 * 1024 and config.notifiers == {}


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        load_config(tmp_path, tmp_path / "elsewhere.toml")
    assert info.value.file == str(tmp_path / "elsewhere.toml") and info.value.exit_code == 2


def test_full_config(tmp_path: Path) -> None:
    _write(tmp_path, """
[secrets]
env = ["OPENAI_API_KEY", "ANTHROPIC_API_KEY"]

[redaction]
patterns = ["acct-[0-9]{8}", "(?i)internal-[a-z]+"]
max_field_bytes = 4096

[notifiers.team]
type = "slack"
url = "https://hooks.example/x"

[notifiers.oncall]
type = "pagerduty"
routing_key_env = "PD_KEY"

[notifiers."audit-hook"]
type = "webhook"
url = "http://127.0.0.1:9/hook"
headers = { X-Team = "ops" }

[console.keys]
kill_run = "K"
pause = "ctrl+p"
""")
    config = load_config(tmp_path)
    assert config.secrets.env == ["OPENAI_API_KEY", "ANTHROPIC_API_KEY"]
    assert config.redaction.max_field_bytes == 4096
    assert isinstance(config.notifiers["team"], SlackNotifier)
    assert isinstance(config.notifiers["oncall"], PagerDutyNotifier)
    assert config.notifiers["oncall"].routing_key_env == "PD_KEY"
    hook = config.notifiers["audit-hook"]
    assert isinstance(hook, WebhookNotifier) and hook.headers == {"X-Team": "ops"}
    assert config.console.keys == {"kill_run": "K", "pause": "ctrl+p"}


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, '[secrets]\nenv = ["A"]\n\n[redaction\npatterns = []\n')
    with pytest.raises(InputError) as info:
        load_config(tmp_path)
    assert info.value.file == str(path) and info.value.line == 4
    assert str(info.value).startswith(f"{path}:4: invalid TOML")


def test_unknown_key_names_line_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path, '[secrets]\nenv = ["A"]\nenvs = ["B"]\n')
    with pytest.raises(InputError) as info:
        load_config(tmp_path)
    assert (info.value.file, info.value.line, info.value.field) == (str(path), 3, "secrets.envs")
    assert str(info.value) == f"{path}:3: secrets.envs: unknown setting"


def test_bad_regex_names_the_pattern(tmp_path: Path) -> None:
    _write(tmp_path, '# redaction\n[redaction]\nmax_field_bytes = 2048\npatterns = ["ok", "broken(["]\n')
    with pytest.raises(InputError) as info:
        load_config(tmp_path)
    assert info.value.line == 4 and info.value.field == "redaction.patterns"
    assert "pattern 1 'broken(['" in info.value.message


def test_pattern_matching_empty_string_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, '[redaction]\npatterns = ["x*"]\n')
    with pytest.raises(InputError, match="matches the empty string"):
        load_config(tmp_path)


def test_notifier_missing_field_points_at_its_table(tmp_path: Path) -> None:
    _write(tmp_path, '[secrets]\nenv = []\n\n[notifiers.ops]\ntype = "webhook"\nheaders = {}\n')
    with pytest.raises(InputError) as info:
        load_config(tmp_path)
    assert (info.value.line, info.value.field) == (4, "notifiers.ops.url")


def test_unknown_notifier_type_lists_the_known_ones(tmp_path: Path) -> None:
    _write(tmp_path, '[notifiers.ops]\nurl = "x"\ntype = "carrier-pigeon"\n')
    with pytest.raises(InputError) as info:
        load_config(tmp_path)
    assert info.value.field == "notifiers.ops" and info.value.line == 1
    assert "carrier-pigeon" in info.value.message and "slack, pagerduty, webhook" in info.value.message


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    _write(tmp_path, '[secrets]\nenv = ["not a name"]\n[redaction]\nmax_field_bytes = 10\n[console.keys]\nkill = ""\n')
    with pytest.raises(InputErrors) as info:
        load_config(tmp_path)
    found = {(e.field, e.line) for e in info.value.errors}
    assert found == {("secrets.env[0]", 2), ("redaction.max_field_bytes", 4), ("console.keys.kill", 6)}


def test_engine_store_refuses_bad_config_before_touching_disk(tmp_path: Path) -> None:
    config = tmp_path / "fd.toml"
    config.write_text("[secrets]\nenv = 3\n")
    with pytest.raises(InputError) as info:
        open_engine_store(tmp_path / "store", config_file=config)
    assert info.value.file == str(config) and info.value.line == 2 and info.value.field == "secrets.env"
    assert not (tmp_path / "store").exists()


def test_engine_store_uses_explicit_config(tmp_path: Path) -> None:
    config = tmp_path / "fd.toml"
    config.write_text('[console.keys]\nquit = "q"\n')
    with open_engine_store(tmp_path / "store", config_file=config) as store:
        assert store.config.console.keys == {"quit": "q"}
