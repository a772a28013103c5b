"""A server to run INSIDE a capsule for the preview tests, on the standard library alone (a capsule's
/usr is the host's, without this repository's packages).

    GET  /          a small page with a relative link (to /headers)
    GET  /headers   the request's head as the server received it
    GET  /big       BIG_SIZE bytes of a known pattern, chunked (no Content-Length)
    POST /echo      the request body back (Content-Length)
    GET  /broken    declares 1 MB, sends 1,000 bytes and closes
    GET  /cookie    sets a host-only cookie, a domain-wide one and one named like the platform's
    GET  /ws        a WebSocket echo: text and binary echoed; the text "close:<code>" makes the
                    server close with that code; a client's close is answered with its own code
    GET  /last-close  the close code the WebSocket echo last received from a client
    GET  /endless   64 KiB chunks for as long as the client takes them
    GET  /written   how many body bytes /endless has written so far (the kernel took them)
    GET  /ws-written  how many bytes of messages the WebSocket's "flood" has written so far

Usage: python3 preview_server.py PORT
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import socket
import struct
import sys

BIG_SIZE = 3 * 1024 * 1024 + 17
PATTERN = bytes(range(256))
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
last_close = {"code": "none"}
endless = {"written": 0, "ws": 0}


def big_body() -> bytes:
    return (PATTERN * (BIG_SIZE // len(PATTERN) + 1))[:BIG_SIZE]


def read_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    first, second = read_exact(sock, 2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", read_exact(sock, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", read_exact(sock, 8))
    mask = read_exact(sock, 4) if second & 0x80 else b"\0\0\0\0"
    payload = bytearray(read_exact(sock, length))
    for i in range(len(payload)):
        payload[i] ^= mask[i % 4]
    return first & 0x0F, bytes(payload)


def write_frame(sock: socket.socket, opcode: int, payload: bytes) -> None:
    head = bytes([0x80 | opcode])
    if len(payload) < 126:
        head += bytes([len(payload)])
    elif len(payload) < 65536:
        head += bytes([126]) + struct.pack("!H", len(payload))
    else:
        head += bytes([127]) + struct.pack("!Q", len(payload))
    sock.sendall(head + payload)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/":
            body = b"<!doctype html><title>preview</title><h1>preview server</h1><a href=headers>headers</a>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path == "/headers":
            body = (self.requestline + "\r\n" + str(self.headers)).encode("latin1")
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path == "/big":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            body = big_body()
            for start in range(0, len(body), 50_000):
                chunk = body[start : start + 50_000]
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/broken":
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.close_connection = True
        elif path == "/endless":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = PATTERN * 256
            try:
                while True:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    endless["written"] += len(chunk)
            except OSError:
                self.close_connection = True
        elif path in ("/last-close", "/written", "/ws-written"):
            counts = {"/written": str(endless["written"]), "/ws-written": str(endless["ws"])}
            body = counts.get(path, last_close["code"]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path == "/cookie":
            self.send_response(200)
            self.send_header("Set-Cookie", "own=1; Path=/")
            self.send_header("Set-Cookie", "wide=1; Domain=localhost; Path=/")
            self.send_header("Set-Cookie", "sessionid=planted; Path=/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/ws":
            self.websocket()
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def websocket(self) -> None:
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()  # noqa: S324
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        sock = self.connection
        self.close_connection = True
        try:
            while True:
                opcode, payload = read_frame(sock)
                if opcode == 8:  # close: answer with the same code
                    last_close["code"] = str(struct.unpack("!H", payload[:2])[0]) if payload else "1005"
                    write_frame(sock, 8, payload[:2])
                    return
                if opcode == 9:  # ping
                    write_frame(sock, 10, payload)
                elif opcode == 1 and payload == b"flood":  # binary messages for as long as taken
                    while True:
                        write_frame(sock, 2, PATTERN * 256)
                        endless["ws"] += len(PATTERN) * 256
                elif opcode == 1 and payload.startswith(b"close:"):
                    write_frame(sock, 8, struct.pack("!H", int(payload[6:])))
                    read_frame(sock)  # the client's answer
                    return
                elif opcode in (1, 2):
                    write_frame(sock, opcode, payload)
        except OSError:
            return


if __name__ == "__main__":
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print("preview server ready", flush=True)
    server.serve_forever()
