"""Where and how to export: `[otel]` in config.toml, filled in from the standard OpenTelemetry variables.

Precedence per setting: config.toml, then OTEL_EXPORTER_OTLP_TRACES_*, then OTEL_EXPORTER_OTLP_*, then the default
(as the OpenTelemetry SDKs read them: https://opentelemetry.io/docs/specs/otel/protocol/exporter/). Export is on when
an endpoint is known and neither `[otel] enabled = false` nor OTEL_SDK_DISABLED=true says otherwise. Header values
named by `headers_env` are read from the environment here and never written anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from engine.errors import InputError
from engine.store.otel_config import OtelConfig

DEFAULT_TIMEOUT_S = 10.0
TRACES_PATH = "/v1/traces"


@dataclass(frozen=True, slots=True)
class ExportSettings:
    url: str
    protocol: str = "http/protobuf"
    headers: dict[str, str] = field(default_factory=dict)
    service_name: str = "flightdeck"
    resource_attributes: dict[str, str | int | float | bool] = field(default_factory=dict)
    sampling: float = 1.0
    content: bool = False
    pending_after_s: float = 2.0
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_backlog: int = 200_000

    def describe(self) -> str:
        """For people: the URL and protocol, never a header value."""
        return f"{self.url} ({self.protocol})"


def _parse_pairs(text: str, variable: str) -> dict[str, str]:
    """W3C Baggage-style `key=value,key2=value2` (values percent-decoded), as OTEL_*_HEADERS and
    OTEL_RESOURCE_ATTRIBUTES are written."""
    pairs: dict[str, str] = {}
    for index, item in enumerate(text.split(",")):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"item {index + 1} {item.strip()[:40]!r} is not key=value", field=variable)
        pairs[unquote(key.strip())] = unquote(value.strip())
    return pairs


def _env_float(environ: Mapping[str, str], name: str) -> float | None:
    value = environ.get(name)
    if value is None or not value.strip():
        return None
    try:
        return float(value)
    except ValueError:
        raise InputError(f"{value!r} is not a number", field=name) from None


def resolve(config: OtelConfig, environ: Mapping[str, str] | None = None) -> ExportSettings | None:
    """The export settings, or None when export is off. InputError (naming the variable or setting) on bad values."""
    env = os.environ if environ is None else environ
    if config.enabled is False or env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    url = config.traces_endpoint
    if url is None and config.endpoint is not None:
        url = config.endpoint.rstrip("/") + TRACES_PATH
    if url is None and env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        url = env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"].strip()
    if url is None and env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        url = env["OTEL_EXPORTER_OTLP_ENDPOINT"].strip().rstrip("/") + TRACES_PATH
    if url is None:
        if config.enabled:
            raise InputError("export is enabled but no endpoint is set (endpoint, traces_endpoint, or "
                             "OTEL_EXPORTER_OTLP_ENDPOINT)", field="otel.enabled")
        return None
    if not url.startswith(("http://", "https://")):
        raise InputError(f"{url!r} is not an http(s) URL", field="OTEL_EXPORTER_OTLP_ENDPOINT")
    protocol = config.protocol or (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or
                                   env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip()
    if protocol not in ("http/protobuf", "http/json"):
        raise InputError(f"protocol {protocol!r} is not supported; use http/protobuf or http/json (gRPC is not "
                         f"spoken)", field="OTEL_EXPORTER_OTLP_PROTOCOL")
    headers: dict[str, str] = {}
    for variable in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        headers.update(_parse_pairs(env.get(variable, ""), variable))
    headers.update(config.headers)
    for header, variable in config.headers_env.items():
        value = env.get(variable)
        if not value:
            raise InputError(f"environment variable {variable} (for header {header}) is not set",
                             field=f"otel.headers_env.{header}")
        headers[header] = value
    resource: dict[str, str | int | float | bool] = dict(_parse_pairs(env.get("OTEL_RESOURCE_ATTRIBUTES", ""),
                                                                      "OTEL_RESOURCE_ATTRIBUTES"))
    resource.update(config.resource_attributes)
    service = config.service_name or env.get("OTEL_SERVICE_NAME", "").strip() or str(resource.pop(
        "service.name", "flightdeck"))
    resource.pop("service.name", None)
    timeout_ms = (_env_float(env, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
                  or _env_float(env, "OTEL_EXPORTER_OTLP_TIMEOUT"))
    timeout = config.timeout or (timeout_ms / 1000.0 if timeout_ms else DEFAULT_TIMEOUT_S)
    sampling = config.sampling
    if sampling is None and env.get("OTEL_TRACES_SAMPLER", "").strip() in ("traceidratio", "parentbased_traceidratio"):
        sampling = _env_float(env, "OTEL_TRACES_SAMPLER_ARG")
        if sampling is not None and not 0.0 <= sampling <= 1.0:
            raise InputError(f"{sampling} is not between 0 and 1", field="OTEL_TRACES_SAMPLER_ARG")
    return ExportSettings(url=url, protocol=protocol, headers=headers, service_name=service,
                          resource_attributes=resource, sampling=1.0 if sampling is None else sampling,
                          content=config.content, pending_after_s=config.pending_after, timeout_s=timeout,
                          max_backlog=config.max_backlog)
