"""The helper ExaBGP runs: relays lines between its stdin/stdout and our unix socket.

ExaBGP 5.0 reads API commands from a helper's stdout and writes acknowledgements
and events to its stdin. This helper connects to the socket the supervisor owns
and copies bytes both ways, so the supervisor keeps the API even when ExaBGP
respawns the helper. It imports nothing from bgpspeaker, to start fast.

With the launcher's speed patches ExaBGP does not run this file: it recognises the
command and connects to the socket itself (``inprocess.py``, which matches this path).
It runs for ExaBGP as released (the benchmark's anchor) and any ExaBGP without the patch.

Usage: python relay.py SOCKET_PATH
"""

import os
import socket
import sys
import threading


def _exabgp_to_socket(sock: socket.socket) -> None:
    """Copy ExaBGP's acks and events (our stdin) to the socket; always read stdin."""
    while True:
        chunk = os.read(0, 65536)
        if not chunk:
            break
        try:
            sock.sendall(chunk)
        except OSError:
            # Parent gone: keep draining stdin so ExaBGP never blocks on us.
            continue
    os._exit(0)


def main() -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(sys.argv[1])
    threading.Thread(target=_exabgp_to_socket, args=(sock,), daemon=True).start()
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        view = memoryview(chunk)
        while view:
            written = os.write(1, view)
            view = view[written:]
    os._exit(0)


if __name__ == "__main__":
    main()
