"""[otel] in config.toml and the standard OTEL_* variables: what turns export on, precedence, and clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import InputError
from engine.export.settings import resolve
from engine.store.config import parse_config
from engine.store.otel_config import OtelConfig

ROOT = Path(__file__).resolve().parents[2]


def test_off_without_an_endpoint() -> None:
    assert resolve(OtelConfig(), {}) is None


def test_standard_variables_turn_it_on() -> None:
    settings = resolve(OtelConfig(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
                                      "OTEL_EXPORTER_OTLP_HEADERS": "x-api=a%20b,other=2",
                                      "OTEL_SERVICE_NAME": "fleet", "OTEL_RESOURCE_ATTRIBUTES": "team=payments",
                                      "OTEL_EXPORTER_OTLP_TIMEOUT": "2500", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
                                      "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"})
    assert settings is not None
    assert settings.url == "http://collector:4318/v1/traces"
    assert settings.headers == {"x-api": "a b", "other": "2"}
    assert (settings.service_name, settings.resource_attributes) == ("fleet", {"team": "payments"})
    assert (settings.timeout_s, settings.protocol, settings.sampling) == (2.5, "http/json", 0.25)


def test_the_traces_endpoint_is_used_as_is_and_the_file_wins() -> None:
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://cloud.langfuse.com/api/public/otel/v1/traces",
           "OTEL_EXPORTER_OTLP_ENDPOINT": "http://ignored:4318"}
    assert resolve(OtelConfig(), env).url == "https://cloud.langfuse.com/api/public/otel/v1/traces"
    config = OtelConfig(endpoint="http://127.0.0.1:6006", service_name="from-file")
    settings = resolve(config, {**env, "OTEL_SERVICE_NAME": "from-env"})
    assert (settings.url, settings.service_name) == ("http://127.0.0.1:6006/v1/traces", "from-file")


def test_disabled_wins() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert resolve(OtelConfig(enabled=False), env) is None
    assert resolve(OtelConfig(), {**env, "OTEL_SDK_DISABLED": "true"}) is None


@pytest.mark.parametrize(("config", "env", "field", "words"), [
    (OtelConfig(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT", "http(s) URL"),
    (OtelConfig(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_HEADERS": "novalue"},
     "OTEL_EXPORTER_OTLP_HEADERS", "not key=value"),
    (OtelConfig(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
     "OTEL_EXPORTER_OTLP_PROTOCOL", "not supported"),
    (OtelConfig(enabled=True), {}, "otel.enabled", "no endpoint"),
    (OtelConfig(endpoint="http://c", headers_env={"Authorization": "NOT_SET_ANYWHERE"}),
     {}, "otel.headers_env.Authorization", "NOT_SET_ANYWHERE"),
])
def test_bad_settings_name_the_variable(config: OtelConfig, env: dict[str, str], field: str, words: str) -> None:
    with pytest.raises(InputError) as caught:
        resolve(config, env)
    assert caught.value.field == field
    assert words in str(caught.value)


def test_config_file_errors_name_file_line_and_field() -> None:
    with pytest.raises(InputError) as caught:
        parse_config('[secrets]\nenv = []\n\n[otel]\nendpoint = "http://c"\nsampel = 0.5\n', "config.toml")
    assert (caught.value.file, caught.value.line, caught.value.field) == ("config.toml", 6, "otel.sampel")
    with pytest.raises(InputError) as caught:
        parse_config('[otel]\nendpoint = "collector:4318"\n', "config.toml")
    assert caught.value.field == "otel.endpoint"


def test_an_engine_with_export_off_never_imports_protobuf(tmp_path: Path) -> None:
    code = ("import sys\n"
            "from tests.engine_helpers import fixture, run_sync\n"
            f"run_sync({str(tmp_path)!r}, fixture('worker'), {{'a': 1, 'b': 2, 'text': 'x'}})\n"
            "loaded = sorted(m for m in sys.modules if m.startswith(('google.protobuf', 'opentelemetry')))\n"
            "assert not loaded, loaded\n")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_sampling_is_decided_per_run_and_stable() -> None:
    from engine.export.mapping import sampled

    runs = [f"run-{n:04d}" for n in range(2000)]
    assert not any(sampled(run, 0.0) for run in runs)
    assert all(sampled(run, 1.0) for run in runs)
    half = [run for run in runs if sampled(run, 0.5)]
    assert 850 < len(half) < 1150
    assert half == [run for run in runs if sampled(run, 0.5)]  # the same runs every time (replays agree)
    assert set(half) >= {run for run in runs if sampled(run, 0.25)}  # a lower ratio keeps a subset
