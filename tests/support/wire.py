"""A TCP relay that counts round trips: how often a client speaks again after an answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit


class Turns:
    """Round trips through the relay, all connections together: a client's bytes count as a
    new trip only when the server spoke since its last ones (one request split across reads
    counts once)."""

    def __init__(self) -> None:
        self.count = 0


@asynccontextmanager
async def counting_round_trips(url: str) -> AsyncIterator[tuple[str, Turns]]:
    """`url` (host and port of a PostgreSQL or pooler) reached through a counting relay: the
    relay's URL and its count."""
    target = urlsplit(url)
    turns = Turns()

    async def relay(client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        server, to_server = await asyncio.open_connection(target.hostname, target.port)
        answered = [True]

        async def upstream() -> None:
            while data := await client.read(65536):
                if answered[0]:
                    turns.count += 1
                    answered[0] = False
                to_server.write(data)
            to_server.close()

        async def downstream() -> None:
            while data := await server.read(65536):
                answered[0] = True
                to_client.write(data)
            to_client.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)

    listener = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    user = target.netloc.rsplit("@", 1)[0]
    try:
        yield urlunsplit(target._replace(netloc=f"{user}@127.0.0.1:{port}")), turns
    finally:
        listener.close()
