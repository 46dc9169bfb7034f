"""Reads config files (one YAML file of `---` documents, or a directory of them) for the engine.

YAML is parsed here; the schema lives in Rust (`tollway.engine.compile_documents`), which validates
everything once and reports every error with its path. `${VAR}` and `${VAR:-default}` are
replaced in the text before parsing, so `port: ${PORT}` stays a number; comment lines are
left alone. Error messages carry file, line and problem, never the text of a line (it may
hold an interpolated secret).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml

__all__ = ["ConfigError", "config_fingerprint", "load_documents"]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_YAML_SUFFIXES = (".yaml", ".yml")


class ConfigError(Exception):
    """The config cannot be used; `errors` lists every problem found, each with its place."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in _YAML_SUFFIXES and p.is_file())
        if not found:
            raise ConfigError([f"{path}: no .yaml or .yml files in this directory"])
        return found
    if not path.exists():
        raise ConfigError([f"{path}: no such file or directory"])
    return [path]


def _interpolate(text: str, source: str, env: Mapping[str, str], errors: list[str]) -> str:
    lines = text.splitlines(keepends=True)
    for n, line in enumerate(lines):
        if "${" not in line or line.lstrip().startswith("#"):
            continue

        def repl(m: re.Match[str], n: int = n) -> str:
            name, default = m.group(1), m.group(2)
            value = env.get(name, default)
            if value is None:
                errors.append(f"{source}:{n + 1}: environment variable {name} is not set")
                return ""
            return value

        lines[n] = _ENV_REF.sub(repl, line)
    return "".join(lines)


def config_fingerprint(path: str | os.PathLike[str]) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and mtimes of the config files: it changes when any of them does."""
    try:
        return tuple(
            (str(f), st.st_size, st.st_mtime_ns) for f in _files(Path(path)) if (st := f.stat())
        )
    except (ConfigError, OSError):
        return ()


def load_documents(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> bytes:
    """Parses every document into the JSON list the engine compiles; raises `ConfigError`."""
    env = os.environ if env is None else env
    errors: list[str] = []
    docs: list[dict[str, Any]] = []
    for file in _files(Path(path)):
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            errors.append(f"{file}: cannot read ({type(e).__name__})")
            continue
        text = _interpolate(text, str(file), env, errors)
        try:
            parsed = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark
            where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else str(file)
            errors.append(f"{where}: invalid YAML: {e.problem or e.context}")
            continue
        except yaml.YAMLError:
            errors.append(f"{file}: invalid YAML")
            continue
        for i, doc in enumerate(parsed):
            kind = doc.get("type") if isinstance(doc, dict) else None
            label = f"{file} (document {i + 1}{f', {kind}' if isinstance(kind, str) else ''})"
            docs.append({"source": label, "doc": doc})
    if errors:
        raise ConfigError(errors)
    try:
        return msgspec.json.encode(docs)
    except (TypeError, msgspec.EncodeError) as e:
        # YAML can express values JSON cannot (dates, binary): name the problem, not the value.
        raise ConfigError([f"{path}: unsupported YAML value ({e.__class__.__name__})"]) from None
