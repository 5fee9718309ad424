"""The Linux side of :mod:`tests.windows.unix_sh`: runs ``/bin/sh ARGS`` for each connection and relays its streams.

Listens on 127.0.0.1 only. A connection that closes early (the demo host ended the Windows ``sh.exe``) kills the
command's whole process group, as ending a real ``sh`` would end what it runs in the foreground.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import struct

from tests.windows.unix_sh import EXIT, HEADER, STDERR, STDIN, STDOUT


async def _frames_to_stdin(reader: asyncio.StreamReader, stdin: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while True:
            kind, size = HEADER.unpack(await reader.readexactly(HEADER.size))
            data = await reader.readexactly(size)
            if kind != STDIN:
                continue
            if not data:
                break
            stdin.write(data)
            await stdin.drain()
    stdin.close()


async def _output_to_frames(kind: int, output: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await output.read(65536):
        writer.write(HEADER.pack(kind, len(chunk)) + chunk)
        await writer.drain()


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    args = json.loads(await reader.readline())
    child = await asyncio.create_subprocess_exec(
        "/bin/sh", *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    feeding = asyncio.create_task(_frames_to_stdin(reader, child.stdin))
    try:
        await asyncio.gather(
            _output_to_frames(STDOUT, child.stdout, writer), _output_to_frames(STDERR, child.stderr, writer)
        )
        code = await child.wait()
        writer.write(HEADER.pack(EXIT, 4) + struct.pack(">i", 128 - code if code < 0 else code))
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        feeding.cancel()
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            await child.wait()
        writer.close()


async def start_bridge() -> tuple[asyncio.Server, int]:
    """Listen on a free loopback port; returns the server and the port."""
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]
