"""Tollway: a fast, OpenAI-compatible LLM gateway with a Rust core."""

__all__ = ["__version__"]

__version__ = "0.1.0"
