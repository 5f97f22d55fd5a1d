"""Known TCP traffic between fake pods, for exact topology counts.

    python tcp_peers.py server PORT CONNECTIONS REPLY_BYTES
        listen, print "ready", then for each of CONNECTIONS accepted
        connections: read until the peer shuts down, send REPLY_BYTES, close.
    python tcp_peers.py client HOST PORT CONNECTIONS SEND_BYTES
        CONNECTIONS times, one after the other: connect, send SEND_BYTES,
        shut down writing, read the reply to its end; prints the bytes read.
"""
from __future__ import annotations

import socket
import sys


def serve(port: int, connections: int, reply: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", port))
        listener.listen(connections)
        print("ready", flush=True)
        for _ in range(connections):
            conn, _ = listener.accept()
            with conn:
                while conn.recv(65536):
                    pass
                conn.sendall(b"r" * reply)


def connect(host: str, port: int, connections: int, send: int) -> None:
    received = 0
    for _ in range(connections):
        with socket.create_connection((host, port), timeout=30) as conn:
            conn.sendall(b"s" * send)
            conn.shutdown(socket.SHUT_WR)
            while chunk := conn.recv(65536):
                received += len(chunk)
    print(received, flush=True)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "server":
        serve(int(args[0]), int(args[1]), int(args[2]))
    else:
        connect(args[0], int(args[1]), int(args[2]), int(args[3]))
