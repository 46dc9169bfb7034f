"""A fast mock provider (OpenAI, Anthropic, Gemini, Vertex AI, Bedrock wire formats) for demos,
end-to-end tests and load tests."""

from tollway.mock.app import MockApp, create_app
from tollway.mock.exchange import ASGIApp
from tollway.mock.settings import SETTINGS_ENV, MockSettings, settings_from_env, settings_to_env

__all__ = [
    "SETTINGS_ENV",
    "ASGIApp",
    "MockApp",
    "MockSettings",
    "create_app",
    "settings_from_env",
    "settings_to_env",
]
