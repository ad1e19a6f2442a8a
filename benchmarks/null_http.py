#!/usr/bin/env python3
"""A null STOW-RS server: reads every request body whole and answers 200 with ``{}``.

The DICOMweb benchmark posts its STOW-RS requests here too, with the same client, to print
the **sender limit** of each STOW-RS row: the most any archive could take from that client
on this machine (as ``storescp --ignore`` does for the DIMSE benchmark). It stores nothing,
parses nothing but the request head, and keeps connections alive.

    .venv/bin/python benchmarks/null_http.py 18080
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nContent-Length: 2\r\n\r\n{}"
_READ = 1 << 20


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while length:
                chunk = await reader.read(min(length, _READ))
                if not chunk:
                    return
                length -= len(chunk)
            writer.write(_ANSWER)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def _main(port: int) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", port, limit=_READ)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(_main(int(sys.argv[1])))
