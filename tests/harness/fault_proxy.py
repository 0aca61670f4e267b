"""A small fault-injecting HTTP proxy for the tests, put in front of moto's server or Azurite.

The proxy listens on a free loopback port and forwards each HTTP/1.1 request to
the real server over its own connection. Faults apply per request, not per
connection, so clients that keep connections alive (boto3, azure-core) meet
them too:

* ``healthy()``                 forward everything
* ``fail(status, times=None)``  answer ``status`` (500, 503...) instead of forwarding,
                                ``times`` requests (``None``: until told otherwise)
* ``reset(times=None)``         drop the connection with a TCP reset (RST) instead
* ``hold(after=0)``             let ``after`` more requests through, then hold every
                                later one unanswered until ``healthy()`` (a hung server)

``stats`` counts what happened, so a test can show that the fault was really
met (a retry test where nothing failed proves nothing). Only requests are
parsed (method, headers, body by Content-Length or chunked); responses are
relayed as they come, framed by their own headers.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from tests.harness.ports import free_port

_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 429: "Too Many Requests"}


@dataclass
class _Mode:
    kind: str = "pass"  # pass | fail | reset | hold
    status: int = 503
    times: int | None = None  # faults left before healing; None = until changed
    after: int = 0  # hold: requests still let through first


class _Closed(Exception):
    pass


def _read_until(sock: socket.socket, buf: bytearray, marker: bytes, limit: int = 1 << 20) -> bytes:
    while True:
        idx = buf.find(marker)
        if idx >= 0:
            out = bytes(buf[: idx + len(marker)])
            del buf[: idx + len(marker)]
            return out
        if len(buf) > limit:
            raise _Closed("header too long")
        chunk = sock.recv(65536)
        if not chunk:
            raise _Closed("peer closed")
        buf.extend(chunk)


def _read_exact(sock: socket.socket, buf: bytearray, n: int) -> bytes:
    while len(buf) < n:
        chunk = sock.recv(max(65536, n - len(buf)))
        if not chunk:
            raise _Closed("peer closed")
        buf.extend(chunk)
    out = bytes(buf[:n])
    del buf[:n]
    return out


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return lines[0], headers


def _read_body(sock: socket.socket, buf: bytearray, headers: dict[str, str]) -> bytes:
    """The raw body bytes as framed on the wire (chunked bodies stay chunked)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out = bytearray()
        while True:
            size_line = _read_until(sock, buf, b"\r\n")
            out += size_line
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    line = _read_until(sock, buf, b"\r\n")
                    out += line
                    if line == b"\r\n":
                        return bytes(out)
            out += _read_exact(sock, buf, size + 2)
    return _read_exact(sock, buf, int(headers.get("content-length", "0") or 0))


class FaultProxy:
    """Forwards HTTP from a free local port to ``upstream`` (host, port), injecting faults."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self.stats: Counter[str] = Counter()
        self._mode = _Mode()
        self._lock = threading.Lock()
        self._healed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._server = socket.create_server(("127.0.0.1", self.port), backlog=64)
        self._server.settimeout(0.2)

    # --- control -------------------------------------------------------------------------
    def healthy(self) -> None:
        with self._lock:
            self._mode = _Mode()
            self._healed.notify_all()

    def fail(self, status: int = 503, times: int | None = None) -> None:
        with self._lock:
            self._mode = _Mode("fail", status=status, times=times)

    def reset(self, times: int | None = None) -> None:
        with self._lock:
            self._mode = _Mode("reset", times=times)

    def hold(self, after: int = 0) -> None:
        with self._lock:
            self._mode = _Mode("hold", after=after)

    def url_for(self, upstream_url: str) -> str:
        """``upstream_url`` with its host and port replaced by the proxy's."""
        host = f"{self.upstream[0]}:{self.upstream[1]}"
        assert host in upstream_url, (host, upstream_url)
        return upstream_url.replace(host, f"127.0.0.1:{self.port}")

    # --- running ---------------------------------------------------------------------------
    def start(self) -> "FaultProxy":
        t = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        self.healthy()
        self._server.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        for t in self._threads:
            t.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self._conns.add(client)
            t = threading.Thread(target=self._serve, args=(client,), daemon=True)
            t.start()
            self._threads = [x for x in self._threads if x.is_alive()] + [t]

    def _decide(self) -> _Mode:
        """What to do with the next request (and count it)."""
        with self._lock:
            mode = self._mode
            if mode.kind == "hold" and mode.after > 0:
                mode.after -= 1
                return _Mode()
            if mode.kind in ("fail", "reset") and mode.times is not None:
                mode.times -= 1
                if mode.times <= 0:
                    self._mode = _Mode()
            return _Mode(mode.kind, mode.status)

    def _wait_healed(self) -> None:
        with self._lock:
            self.stats["held"] += 1
            while self._mode.kind == "hold" and not self._stop.is_set():
                self._healed.wait(0.2)

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        buf = bytearray()
        try:
            while not self._stop.is_set():
                head = _read_until(client, buf, b"\r\n\r\n")
                request_line, headers = _headers(head)
                method = request_line.split(" ", 1)[0].upper()
                mode = self._decide()
                self.stats["requests"] += 1
                if mode.kind == "reset":
                    self.stats["reset"] += 1
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                expect = headers.get("expect", "").lower() == "100-continue"
                if mode.kind == "fail":
                    self.stats["failed"] += 1
                    if not expect:
                        _read_body(client, buf, headers)
                    reason = _REASONS.get(mode.status, "Error")
                    client.sendall(
                        f"HTTP/1.1 {mode.status} {reason}\r\nContent-Length: 0\r\n"
                        "Connection: close\r\n\r\n".encode()
                    )
                    return
                if mode.kind == "hold":
                    self._wait_healed()
                if expect:
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    head = b"\r\n".join(
                        line for line in head.split(b"\r\n") if not line.lower().startswith(b"expect:")
                    )
                body = _read_body(client, buf, headers)
                if upstream is None:
                    upstream = socket.create_connection(self.upstream, timeout=60)
                upstream.sendall(head + body)
                self.stats["forwarded"] += 1
                keep = self._relay_response(upstream, client, method)
                if not keep:
                    return
        except (_Closed, OSError, ValueError):
            return
        finally:
            with self._lock:
                self._conns.discard(client)
            client.close()
            if upstream is not None:
                upstream.close()

    def _relay_response(self, upstream: socket.socket, client: socket.socket, method: str) -> bool:
        """Copy one response (skipping interim 1xx) to the client; whether to keep the connection."""
        ubuf = bytearray()
        while True:
            head = _read_until(upstream, ubuf, b"\r\n\r\n")
            status_line, headers = _headers(head)
            status = int(status_line.split(" ")[1])
            if 100 <= status < 200:
                continue
            break
        client.sendall(head)
        if method == "HEAD" or status in (204, 304):
            pass
        elif "chunked" in headers.get("transfer-encoding", "").lower() or "content-length" in headers:
            client.sendall(_read_body(upstream, ubuf, headers))
        else:  # framed by close
            client.sendall(bytes(ubuf))
            while chunk := upstream.recv(65536):
                client.sendall(chunk)
            return False
        return headers.get("connection", "").lower() != "close"


@contextmanager
def fault_proxy(upstream_url: str) -> Iterator[FaultProxy]:
    """A proxy in front of ``http://host:port...``; stopped on exit."""
    from urllib.parse import urlparse

    p = urlparse(upstream_url)
    proxy = FaultProxy(p.hostname or "127.0.0.1", p.port or 80).start()
    try:
        yield proxy
    finally:
        proxy.stop()
