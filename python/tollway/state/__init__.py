"""Shared state across replicas: limits and budgets synced through Redis in the background."""

from tollway.state.redis_sync import RedisSync

__all__ = ["RedisSync"]
