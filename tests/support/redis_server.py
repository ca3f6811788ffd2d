"""The Redis the rate limit tests use (``TEST_REDIS_URL``, default the local one), under key prefixes of their own."""

from __future__ import annotations

import os

import redis.asyncio

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_test_url() -> str:
    """``TEST_REDIS_URL``, else the local Redis."""
    return os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS_URL)


async def ping(url: str) -> None:
    """Raise unless the Redis at ``url`` answers within 2 s."""
    client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        await client.ping()
    finally:
        await client.aclose()


async def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix``."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def keys(url: str, prefix: str) -> list[bytes]:
    """Every key under ``prefix``, sorted."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        return sorted([key async for key in client.scan_iter(match=f"{prefix}*")])
    finally:
        await client.aclose()
