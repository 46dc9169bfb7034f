"""The compact per-request telemetry record, as Python reads and writes it.

Records travel as MessagePack arrays, fields in the order below (the wire order, shared with
the core's `telemetry/record.rs`): the core composes and writes a proxied request's record
(`request_record`), MCP requests' records are built here and written by msgspec, and the
request log's readers decode them into these Structs."""

from __future__ import annotations

import msgspec

__all__ = [
    "Attempt",
    "GuardrailRun",
    "LogPart",
    "Record",
    "ToolRun",
    "decode_records",
]


class Attempt(msgspec.Struct, array_like=True, gc=False):
    """One upstream attempt. Times are wall-clock `time.time_ns()`; unknown values stay None.

    `status` is the upstream HTTP status (0 when no response arrived); `error_type` is empty on
    success, else e.g. `"429"`, `"timeout"`, `"connection_error"`. `fallback_reason` says why
    this attempt was made on a fallback target (e.g. `"503"`), empty for the first target.
    `input_messages` (the request's `messages` as JSON text) and `output_text` are filled only
    when `Telemetry.capture_content` is true.
    """

    # The field order is the wire order decoded by rust/tollway-core/src/telemetry/otlp.rs.
    target: str
    provider: str
    request_model: str
    start_ns: int
    end_ns: int
    status: int = 0
    error_type: str = ""
    response_model: str = ""
    response_id: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reasons: list[str] = []
    ttft_ms: float | None = None
    itl_mean_ms: float | None = None
    itl_max_ms: float | None = None
    cost_usd: float | None = None
    attempt: int = 1
    fallback_reason: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stream: bool = False
    input_messages: str | None = None
    output_text: str | None = None
    # The usage was counted by the gateway's tokenizer (the provider's was missing).
    usage_estimated: bool = False


class GuardrailRun(msgspec.Struct, array_like=True, gc=False):
    """One guardrail run: `phase` input|output, `result` pass|flag|mutate|block|error, and
    the categories found (never the matched text). Positional too: the core's run tuples
    (`Guardrails.run_input`) are its fields in order."""

    name: str
    phase: str
    result: str
    start_ns: int
    end_ns: int
    categories: list[str] = []


class LogPart(msgspec.Struct, array_like=True, gc=False):
    """What only the request log reads (tollway.logs): whether the request may be logged,
    the usage charged (also for a stream cut short), and the bodies when they are kept."""

    enabled: bool = True
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    stream: bool = False
    request_body: str | None = None
    response_body: str | None = None


class ToolRun(msgspec.Struct, array_like=True, gc=False, kw_only=True):
    """One MCP request to a tool server (`tools/call`, `tools/list`, ...), made through the
    MCP endpoints or the agent loop. `error_type` is empty on success, else e.g.
    `"tool_error"` (the tool's `isError`), `"rate_limited"`, `"guardrail_blocked"`,
    `"unavailable"`. `arguments`/`result` (JSON text) only when content is captured."""

    server: str
    method: str
    tool: str
    start_ns: int
    end_ns: int
    error_type: str = ""
    session_id: str = ""
    arguments: str | None = None
    result: str | None = None


class Record(msgspec.Struct, array_like=True, gc=False):
    """One gateway request. `rate_limit`/`budget` are `(rule_id, result)` of the rule that
    decided (result `"allowed"`, `"blocked"`, or for a budget in audit mode that is over its
    limit `"over_limit_audit"`); `routing_rule` is the load-balancing rule id.
    `traceparent` is the caller's W3C header value, if any. `error_type` names a gateway-side
    failure (e.g. `"rate_limited"`, `"upstream_unavailable"`), empty on success.
    """

    request_id: str
    start_ns: int
    end_ns: int
    method: str = "POST"
    route: str = "/v1/chat/completions"
    status: int = 200
    key_name: str = ""
    subject: str = ""
    model: str = ""
    rule_ids: list[str] = []
    metadata: dict[str, str] = {}
    traceparent: str = ""
    attempts: list[Attempt] = []
    error_type: str = ""
    rate_limit: tuple[str, str] | None = None
    budget: tuple[str, str] | None = None
    routing_rule: str = ""
    guardrails: list[GuardrailRun] = []
    # The targets the routing rule ordered, first choice first (filled when tracing).
    candidates: list[str] = []
    # MCP requests and tool calls of this request (spans of `tfy.span_type: MCP`).
    tools: list[ToolRun] = []
    # Set only when a request log is configured; the OTLP encoder skips it.
    log: LogPart | None = None


# A MessagePack array of records, as telemetry intake hands them to its sinks.
decode_records = msgspec.msgpack.Decoder(list[Record]).decode
