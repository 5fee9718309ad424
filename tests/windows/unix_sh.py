"""A ``sh.exe`` for the Windows side of scripts/test-windows: runs ``/bin/sh ARGS`` on the Linux side, over loopback.

On a real Windows PC the demo's SSH host runs commands with Git for Windows' ``sh.exe``. Under Wine there is none,
and a Windows process cannot pipe to a Linux one, so this console script (installed as ``sh.exe`` into the Wine
venv) connects to the driver's bridge (:mod:`tests.windows.bridge`) on ``127.0.0.1:$GUARDIA_WINE_SH_PORT`` and
relays stdin, stdout, stderr and the exit status. Standard library only: it is installed without dependencies.

Frames both ways: one byte of kind, four bytes of length (big-endian), the data. Kinds: 0 stdin (empty: end of
input), 1 stdout, 2 stderr, 3 exit status (a signed 32-bit integer).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import threading

STDIN, STDOUT, STDERR, EXIT = 0, 1, 2, 3
HEADER = struct.Struct(">BI")


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the bridge closed the connection")
        data += chunk
    return bytes(data)


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    kind, size = HEADER.unpack(read_exactly(sock, HEADER.size))
    return kind, read_exactly(sock, size)


def send_frame(sock: socket.socket, lock: threading.Lock, kind: int, data: bytes) -> None:
    with lock:
        sock.sendall(HEADER.pack(kind, len(data)) + data)


def _pump_stdin(sock: socket.socket, lock: threading.Lock) -> None:
    try:
        while chunk := os.read(0, 65536):
            send_frame(sock, lock, STDIN, chunk)
        send_frame(sock, lock, STDIN, b"")
    except OSError:
        pass


def main() -> None:
    sock = socket.create_connection(("127.0.0.1", int(os.environ["GUARDIA_WINE_SH_PORT"])))
    lock = threading.Lock()
    sock.sendall(json.dumps(sys.argv[1:]).encode() + b"\n")
    threading.Thread(target=_pump_stdin, args=(sock, lock), daemon=True).start()
    outputs = {STDOUT: sys.stdout.buffer, STDERR: sys.stderr.buffer}
    while True:
        kind, data = read_frame(sock)
        if kind == EXIT:
            sys.stdout.flush()
            os._exit(struct.unpack(">i", data)[0] & 0xFF)
        outputs[kind].write(data)
        outputs[kind].flush()


if __name__ == "__main__":
    main()
