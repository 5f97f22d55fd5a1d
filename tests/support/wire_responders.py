"""Minimal Kafka and MongoDB servers: just enough wire protocol for the
official Python clients (kafka-python, pymongo), since Debian packages
neither server. Run as a script inside a pod:

    python wire_responders.py kafka PORT
    python wire_responders.py mongodb PORT

Like the real servers, each reads a message's length prefix first (a Kafka
broker its 4-byte size, mongod the 16-byte header) and then the rest: the
l7 collector must see requests read that way.

Kafka: ApiVersions (any version, answered in the v0 format a broker uses to
say which versions it has: ApiVersions v0, Metadata v0-v1) and Metadata
(one broker, itself; no topics). Anything else: the connection is closed.
MongoDB: the OP_QUERY handshake (isMaster/hello) with an OP_REPLY, then
OP_MSG commands: ping, hello/isMaster, endSessions answer {ok: 1}; every
other command fails the way mongod fails one, {ok: 0, errmsg, code} with ok
first.
"""
from __future__ import annotations

import datetime
import socket
import socketserver
import struct
import sys

import bson

API_VERSIONS, METADATA = 18, 3


def _read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _kafka_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


class KafkaHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        host, port = sock.getsockname()[:2]
        while True:
            try:
                size = struct.unpack(">i", _read_exact(sock, 4))[0]
                payload = _read_exact(sock, size)
            except ConnectionError:
                return
            api, version, correlation = struct.unpack(">hhi", payload[:8])
            if api == API_VERSIONS:
                # v0 body (what a broker answers whatever version was asked).
                error = 0 if version == 0 else 35  # UNSUPPORTED_VERSION: ask again with v0
                apis = [(API_VERSIONS, 0, 0), (METADATA, 0, 1)]
                body = struct.pack(">hi", error, len(apis)) + b"".join(struct.pack(">hhh", *a) for a in apis)
            elif api == METADATA and version <= 1:
                broker = struct.pack(">i", 0) + _kafka_string(host) + struct.pack(">i", port)
                if version == 1:
                    broker += struct.pack(">h", -1)  # rack: null
                body = struct.pack(">i", 1) + broker
                if version == 1:
                    body += struct.pack(">i", 0)  # controller id
                body += struct.pack(">i", 0)  # topics: none
            else:
                return
            reply = struct.pack(">i", correlation) + body
            sock.sendall(struct.pack(">i", len(reply)) + reply)


OP_REPLY, OP_QUERY, OP_MSG = 1, 2004, 2013
_OK_COMMANDS = {"ping", "hello", "ismaster", "endsessions"}
_next_id = [1000]


def _handshake() -> dict:
    return {"ismaster": True, "helloOk": True, "maxBsonObjectSize": 16 * 1024 * 1024,
            "maxMessageSizeBytes": 48_000_000, "maxWriteBatchSize": 100_000,
            "localTime": datetime.datetime.now(datetime.UTC),
            "logicalSessionTimeoutMinutes": 30, "connectionId": 1, "minWireVersion": 0,
            "maxWireVersion": 17, "readOnly": False, "ok": 1.0}


def _header(length: int, response_to: int, opcode: int) -> bytes:
    _next_id[0] += 1
    return struct.pack("<iiii", 16 + length, _next_id[0], response_to, opcode)


class MongoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        while True:
            try:
                header = _read_exact(sock, 16)
                length, request_id, _, opcode = struct.unpack("<iiii", header)
                body = _read_exact(sock, length - 16)
            except ConnectionError:
                return
            if opcode == OP_QUERY:
                # The legacy handshake: whatever it asks, the hello reply.
                # OP_REPLY: flags, cursor id, starting from, one document.
                out = struct.pack("<iqii", 0, 0, 0, 1) + bson.encode(_handshake())
                sock.sendall(_header(len(out), request_id, OP_REPLY) + out)
                continue
            if opcode != OP_MSG or body[4] != 0:
                return
            command = bson.decode(body[5:5 + struct.unpack("<i", body[5:9])[0]])
            name = next(iter(command))
            if name.lower() in ("hello", "ismaster"):
                reply = _handshake()
            elif name.lower() in _OK_COMMANDS:
                reply = {"ok": 1.0}
            else:
                reply = {"ok": 0.0, "errmsg": f"no such command: '{name}'", "code": 59,
                         "codeName": "CommandNotFound"}
            out = struct.pack("<iB", 0, 0) + bson.encode(reply)
            sock.sendall(_header(len(out), request_id, OP_MSG) + out)


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main(argv: list[str]) -> int:
    kind, port = argv[0], int(argv[1])
    handler = {"kafka": KafkaHandler, "mongodb": MongoHandler}[kind]
    with _Server(("0.0.0.0", port), handler) as server:
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
