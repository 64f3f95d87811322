"""A TCP forwarder: the hosts reach the system PostgreSQL (which listens on 127.0.0.1 only) through it.

    python -m benchmarks.hosts.forward LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT

It listens on the bridge's address and pipes every connection to the target. The system server's
configuration stays as it is: to PostgreSQL each connection comes from 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

logger = logging.getLogger(__name__)
BUFFER = 65536


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(BUFFER):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def serve(listen_host: str, listen_port: int, target_host: str, target_port: int) -> None:
    """Forward connections to (listen_host, listen_port) to (target_host, target_port), until cancelled."""

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection(target_host, target_port)
        except OSError as exc:
            logger.warning("cannot reach %s:%s: %s", target_host, target_port, exc)
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, target_writer), _pipe(target_reader, client_writer))

    server = await asyncio.start_server(handle, listen_host, listen_port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("listen_host")
    parser.add_argument("listen_port", type=int)
    parser.add_argument("target_host")
    parser.add_argument("target_port", type=int)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s forward %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.listen_host, args.listen_port, args.target_host, args.target_port))


if __name__ == "__main__":
    main()
