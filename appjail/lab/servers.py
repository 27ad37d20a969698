"""Small HTTP and DNS servers for the lab's simulated internet (standard library only).

    python -m appjail.lab.servers http --bind 192.0.2.80 --bind 2001:db8:2::80 --port 80 --log http.jsonl
    python -m appjail.lab.servers dns --bind 192.0.2.53 --port 53 --answer 192.0.2.80 --log dns.jsonl

HTTP: `GET /` answers `client=<peer ip>`; `GET /bytes/N[?rate=BYTES_PER_SEC]` sends
N bytes, throttled if asked; `GET /slow` sends one byte a second for a minute.
DNS (UDP and TCP): A queries for names in the zone get the configured address,
AAAA queries there an empty NOERROR, everything else NXDOMAIN; with
--delay SECONDS each answer comes that late (a long delay: a server that
never answers, for a resolver's purposes).

Each request or query is appended to the log as one JSON line. A server
prints READY once all its sockets listen, and exits with status 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlsplit

READY = "READY"
MAX_BYTES = 10**9
CHUNK = 64 * 1024
SLOW_SECONDS = 60
TTL = 60


class JsonLog:
    """Append-only JSON-lines log shared by handler threads; every line is flushed at once."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, **record: Any) -> None:
        line = json.dumps(record) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()


def read_log(path: Path) -> list[dict[str, Any]]:
    """The complete records of a JsonLog (a line still being written is left out)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def _bind(
    server_class: type[socketserver.BaseServer],
    address: str,
    port: int,
    handler: type[socketserver.BaseRequestHandler],
    **attributes: Any,
) -> socketserver.BaseServer:
    """Bind a server of the right address family; `attributes` become attributes of the server."""
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    cls = type(server_class.__name__, (server_class,), {"address_family": family, **attributes})
    server: socketserver.BaseServer = cls((address, port), handler)
    return server


# --- HTTP -------------------------------------------------------------------


def paced(total: int, rate: float | None) -> Iterator[bytes]:
    """`total` zero bytes in chunks, no faster than `rate` bytes per second if given."""
    size = CHUNK if rate is None else max(1, min(CHUNK, int(rate / 10)))
    block = bytes(size)
    start = time.monotonic()
    sent = 0
    while sent < total:
        if rate is not None:
            time.sleep(max(0.0, start + sent / rate - time.monotonic()))
        n = min(size, total - sent)
        yield block[:n]
        sent += n


class HttpHandler(BaseHTTPRequestHandler):
    server: Any  # a _bind() subclass of ThreadingHTTPServer carrying `log`

    def do_GET(self) -> None:
        client = self.client_address[0]
        self.server.log.write(client=client, path=self.path)
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if url.path == "/":
            body = f"client={client}\n".encode()
            self._send(len(body), iter([body]), "text/plain")
        elif url.path == "/slow":
            self._send(SLOW_SECONDS, paced(SLOW_SECONDS, rate=1), "application/octet-stream")
        elif len(parts) == 2 and parts[0] == "bytes":
            query = parse_qs(url.query)
            try:
                length = int(parts[1])
                rate = float(query["rate"][0]) if "rate" in query else None
            except ValueError:
                self.send_error(400, "bad number")
                return
            if not 0 <= length <= MAX_BYTES or (rate is not None and not 0 < rate < float("inf")):
                self.send_error(400, f"need 0 <= N <= {MAX_BYTES} and a finite rate > 0")
                return
            self._send(length, paced(length, rate), "application/octet-stream")
        else:
            self.send_error(404)

    def _send(self, length: int, chunks: Iterator[bytes], content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        try:
            for chunk in chunks:
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up: its business, not an error of ours


# --- DNS --------------------------------------------------------------------

QR, OPCODE_MASK, RD, RA = 0x8000, 0x7800, 0x0100, 0x0080
NOERROR, FORMERR, NXDOMAIN, NOTIMP = 0, 1, 3, 4
TYPE_A, TYPE_AAAA, CLASS_IN = 1, 28, 1
TYPE_NAMES = {
    1: "A",
    2: "NS",
    5: "CNAME",
    6: "SOA",
    12: "PTR",
    15: "MX",
    16: "TXT",
    28: "AAAA",
    33: "SRV",
    65: "HTTPS",
    255: "ANY",
}


def _parse_question(message: bytes, offset: int) -> tuple[str, int, int]:
    """(name, qtype, end offset) of the question at `offset`; IndexError/struct.error/ValueError if malformed."""
    labels = []
    while length := message[offset]:
        if length > 63:  # a compression pointer or garbage: queries have no business with either
            raise ValueError("bad label length")
        label = message[offset + 1 : offset + 1 + length]
        if len(label) < length:
            raise ValueError("truncated label")
        labels.append(label.decode("ascii", "backslashreplace").lower())
        offset += 1 + length
    qtype, _qclass = struct.unpack_from("!HH", message, offset + 1)
    return ".".join(labels) + ".", qtype, offset + 5


class Resolver:
    """Answers queries for one zone with one IPv4 address and logs them."""

    def __init__(self, zone: str, address: str, log: JsonLog) -> None:
        self.zone = zone.strip(".").lower() + "."
        self.address = ipaddress.IPv4Address(address).packed
        self.log = log

    def _in_zone(self, name: str) -> bool:
        return name == self.zone or name.endswith("." + self.zone)

    def reply(self, query: bytes, client: str) -> bytes | None:
        """The reply to a query, or None for what deserves no reply (too short, or itself a reply)."""
        if len(query) < 12:
            return None
        qid, flags, qdcount = struct.unpack_from("!HHH", query)
        if flags & QR:
            return None

        def header(rcode: int, questions: int, answers: int) -> bytes:
            reply_flags = QR | (flags & (OPCODE_MASK | RD)) | (RA if flags & RD else 0) | rcode
            return struct.pack("!HHHHHH", qid, reply_flags, questions, answers, 0, 0)

        if flags & OPCODE_MASK:
            return header(NOTIMP, 0, 0)
        try:
            if qdcount != 1:
                raise ValueError("expected one question")
            name, qtype, end = _parse_question(query, 12)
        except (IndexError, ValueError, struct.error):
            return header(FORMERR, 0, 0)
        self.log.write(client=client, name=name, type=TYPE_NAMES.get(qtype, f"TYPE{qtype}"))
        question = query[12:end]
        if self._in_zone(name) and qtype == TYPE_A:
            answer = struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL, 4) + self.address
            return header(NOERROR, 1, 1) + question + answer
        if self._in_zone(name) and qtype == TYPE_AAAA:
            return header(NOERROR, 1, 0) + question
        return header(NXDOMAIN, 1, 0) + question


class DnsUdpHandler(socketserver.BaseRequestHandler):
    server: Any  # carries `resolver` and `delay`

    def handle(self) -> None:
        query, sock = self.request
        reply = self.server.resolver.reply(query, self.client_address[0])
        time.sleep(self.server.delay)
        if reply is not None:
            sock.sendto(reply, self.client_address)


class DnsTcpHandler(socketserver.StreamRequestHandler):
    server: Any  # carries `resolver` and `delay`
    timeout = 10

    def handle(self) -> None:
        try:
            while len(prefix := self.rfile.read(2)) == 2:
                query = self.rfile.read(struct.unpack("!H", prefix)[0])
                reply = self.server.resolver.reply(query, self.client_address[0])
                if reply is None:
                    return
                time.sleep(self.server.delay)
                self.wfile.write(struct.pack("!H", len(reply)) + reply)
        except OSError:
            pass  # timed out or reset: nothing to answer


class _DnsUdpServer(socketserver.ThreadingUDPServer):
    daemon_threads = True
    allow_reuse_address = True


class _DnsTcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    allow_reuse_port = True  # lets a wildcard and a specific address (0.0.0.0 and 127.0.0.53) both listen on :53


# --- command line -----------------------------------------------------------


def _servers(args: argparse.Namespace, log: JsonLog) -> list[socketserver.BaseServer]:
    if args.kind == "http":
        return [_bind(ThreadingHTTPServer, address, args.port, HttpHandler, log=log) for address in args.bind]
    resolver = Resolver(args.zone, args.answer, log)
    return [
        _bind(server_class, address, args.port, handler, resolver=resolver, delay=args.delay)
        for address in args.bind
        for server_class, handler in ((_DnsUdpServer, DnsUdpHandler), (_DnsTcpServer, DnsTcpHandler))
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m appjail.lab.servers", description=__doc__.split("\n\n")[0])
    kinds = parser.add_subparsers(dest="kind", required=True)
    for kind, port in (("http", 80), ("dns", 53)):
        sub = kinds.add_parser(kind)
        sub.add_argument("--bind", action="append", required=True, metavar="ADDRESS", help="repeat for more")
        sub.add_argument("--port", type=int, default=port)
        sub.add_argument("--log", type=Path, required=True, help="JSON-lines file to append to")
        if kind == "dns":
            sub.add_argument("--zone", default="lab.test.")
            sub.add_argument("--answer", required=True, metavar="IPV4", help="address of every A record")
            sub.add_argument("--delay", type=float, default=0.0, metavar="SECONDS", help="answer this late")
    return parser


def _exit(signum: int, _frame: object) -> None:
    sys.exit(0)


def main(argv: list[str] | None = None) -> NoReturn:
    args = _parser().parse_args(argv)
    servers = _servers(args, JsonLog(args.log))
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
    print(READY, flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
