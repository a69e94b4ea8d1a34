"""The `[otel]` table of config.toml: where and how the engine exports its traces as OpenTelemetry (OTLP) spans.

    [otel]
    enabled = true                                  # default: on when an endpoint is set here or in the environment
    endpoint = "http://127.0.0.1:4318"              # OTLP/HTTP base URL; /v1/traces is appended
    traces_endpoint = "https://host/api/public/otel/v1/traces"  # the full URL instead (used as is)
    protocol = "http/protobuf"                      # or "http/json"
    headers = { "x-team" = "payments" }             # plain headers (never secrets: the file is not secret)
    headers_env = { Authorization = "LANGFUSE_AUTH_HEADER" }  # header -> environment variable holding its value
    service_name = "flightdeck"
    resource_attributes = { "deployment.environment" = "prod" }
    sampling = 1.0                                  # share of runs exported, decided per run (trace id ratio)
    content = false                                 # message content (inputs, outputs, tool arguments and results)
    pending_after = "2s"                            # a span running this long is announced before it ends
    timeout = "10s"                                 # per request
    max_backlog = 200000                            # events the exporter may fall behind the store; beyond: skipped

Only the shape is checked here; engine/export/settings.py merges it with the standard OTEL_EXPORTER_OTLP_* variables.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.durations import Duration

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"


class OtelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool | None = None
    endpoint: str | None = Field(None, pattern=r"^https?://")
    traces_endpoint: str | None = Field(None, pattern=r"^https?://")
    protocol: Literal["http/protobuf", "http/json"] | None = None
    headers: dict[Annotated[str, Field(pattern=HEADER_NAME)], str] = Field(default_factory=dict)
    headers_env: dict[Annotated[str, Field(pattern=HEADER_NAME)], Annotated[str, Field(pattern=ENV_NAME)]] = Field(
        default_factory=dict)
    service_name: str | None = Field(None, min_length=1)
    resource_attributes: dict[str, str | int | float | bool] = Field(default_factory=dict)
    sampling: float | None = Field(None, ge=0.0, le=1.0)
    content: bool = False
    pending_after: Annotated[Duration, Field(gt=0)] = 2.0
    timeout: Annotated[Duration, Field(gt=0)] | None = None
    max_backlog: int = Field(200_000, ge=100, le=10_000_000)
