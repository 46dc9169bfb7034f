"""Feature toggles: each `--no-<feature>` flag removes its part of loadtest/gateway.yaml."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Feature:
    name: str
    help: str
    doc_type: str | None = None  # a whole config document that switches the feature on
    settings_key: str | None = None  # or a key of the gateway-settings document
    needs_otlp_sink: bool = False  # the harness starts a local OTLP receiver when it is on
    # For a settings key whose absence means "on" (a default): the value that switches it off.
    off_value: Any = None


# A feature is "implemented" once loadtest/gateway.yaml contains its document or settings key;
# until then its flag is a no-op that says so. Adding a feature to the harness is one line here.
FEATURES: tuple[Feature, ...] = (
    Feature(
        "otel", "OTEL trace export to a local OTLP sink", settings_key="otel", needs_otlp_sink=True
    ),
    Feature("limits", "the rate-limiting rule", doc_type="gateway-rate-limiting-config"),
    Feature("routing", "weighted routing", doc_type="gateway-load-balancing-config"),
    Feature("budgets", "budget rules", doc_type="gateway-budget-config"),
    Feature("guardrails", "guardrails", doc_type="gateway-guardrails-config"),
    Feature(
        "logs",
        "the request log (written in the background)",
        settings_key="request_logs",
        off_value={"enabled": False},
    ),
)


def _present(feature: Feature, docs: list[dict[str, Any]]) -> bool:
    for doc in docs:
        if feature.doc_type is not None and doc.get("type") == feature.doc_type:
            return True
        if doc.get("type") == "gateway-settings" and feature.settings_key in doc:
            return True
    return False


def _without(feature: Feature, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kept: list[dict[str, Any]] = []
    for doc in docs:
        if feature.doc_type is not None and doc.get("type") == feature.doc_type:
            continue
        if feature.settings_key is not None and doc.get("type") == "gateway-settings":
            doc = {k: v for k, v in doc.items() if k != feature.settings_key}
            if feature.off_value is not None:
                doc[feature.settings_key] = feature.off_value
        kept.append(doc)
    return kept


# What the requests ask for when gateway.yaml has no weighted-routing rule.
DEFAULT_MODEL = "mock/gpt-4o-mini"


def _weighted_rule(docs: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(virtual model, its first target) of the first weight-based rule naming a model."""
    for doc in docs:
        if doc.get("type") != "gateway-load-balancing-config":
            continue
        for rule in doc.get("rules") or []:
            models = (rule.get("when") or {}).get("models") or []
            targets = rule.get("load_balance_targets") or []
            if rule.get("type") == "weight-based-routing" and models and targets:
                return str(models[0]), str(targets[0]["target"])
    return None


@dataclass(frozen=True)
class GatewayConfig:
    path: Path  # the file the gateway is started with
    enabled: tuple[str, ...]
    disabled: tuple[str, ...]  # switched off by a flag
    absent: tuple[str, ...]  # not in gateway.yaml yet
    needs_otlp_sink: bool
    # The `model` every request asks for: the routed virtual model, or with --no-routing the
    # rule's first target directly (the virtual name would not exist without its rule).
    model: str = DEFAULT_MODEL

    def as_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "enabled": list(self.enabled),
            "disabled": list(self.disabled),
            "not_yet_implemented": list(self.absent),
            "model": self.model,
        }


def resolve(base: Path, off: Iterable[str], out_dir: Path) -> GatewayConfig:
    """Write the variant of `base` without the features in `off` (or use `base` when unchanged)."""
    docs = [d for d in yaml.safe_load_all(base.read_text()) if d]
    off = set(off)
    routed = _weighted_rule(docs)
    model = DEFAULT_MODEL if routed is None else routed[0 if "routing" not in off else 1]
    enabled, disabled, absent = [], [], []
    sink = False
    for feature in FEATURES:
        if not _present(feature, docs):
            absent.append(feature.name)
        elif feature.name in off:
            disabled.append(feature.name)
            docs = _without(feature, docs)
        else:
            enabled.append(feature.name)
            sink = sink or feature.needs_otlp_sink
    path = base
    if disabled:
        # ${ENV} placeholders survive the round trip as plain strings; the gateway expands them.
        path = out_dir / f"gateway-no-{'-no-'.join(disabled)}.yaml"
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return GatewayConfig(path, tuple(enabled), tuple(disabled), tuple(absent), sink, model)
