"""A minimal RFB (VNC) client for measurements: stdlib only, so it also runs inside a user container.

    python rfb_client.py --unix /tmp/jupyter-server-proxy-*/socket [--frames 20] [--pings 50]

Speaks RFB 3.8 with security type None and the Raw encoding, then measures
- full frames: non-incremental requests for the whole screen, read completely (frames/s, MB/s);
- small requests: non-incremental requests for a 16x16 region (round-trip time).
Prints one JSON line. ``benchmarks/relay.py`` runs it directly on the VNC unix socket inside the
container and, through the Hub's proxy, over the authenticated websocket.
"""

from __future__ import annotations

import argparse
import glob
import json
import socket
import struct
import time


class SocketStream:
    def __init__(self, sock: socket.socket):
        self.sock = sock

    def read(self, n: int) -> bytes:
        chunks, left = [], n
        while left:
            chunk = self.sock.recv(min(left, 1 << 20))
            if not chunk:
                raise ConnectionError("VNC server closed the connection")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)


class RFB:
    def __init__(self, stream):
        self.stream = stream
        version = stream.read(12)
        if not version.startswith(b"RFB 003."):
            raise ConnectionError(f"not an RFB server: {version!r}")
        stream.write(b"RFB 003.008\n")
        (count,) = struct.unpack("B", stream.read(1))
        types = stream.read(count)
        if 1 not in types:
            raise ConnectionError(f"security type None not offered: {list(types)}")
        stream.write(b"\x01")
        (result,) = struct.unpack(">I", stream.read(4))
        if result != 0:
            raise ConnectionError("security handshake failed")
        stream.write(b"\x01")  # shared
        self.width, self.height = struct.unpack(">HH", stream.read(4))
        pixel_format = stream.read(16)
        self.bytes_per_pixel = pixel_format[0] // 8
        (name_length,) = struct.unpack(">I", stream.read(4))
        self.name = stream.read(name_length).decode(errors="replace")
        stream.write(struct.pack(">BxHi", 2, 1, 0))  # SetEncodings: Raw only

    def request(self, x: int, y: int, w: int, h: int, incremental: bool = False, keep: list | None = None) -> int:
        """Ask for a region and read the whole update; returns the pixel bytes received (kept in ``keep``)."""
        self.stream.write(struct.pack(">BBHHHH", 3, int(incremental), x, y, w, h))
        while True:
            (kind,) = struct.unpack("B", self.stream.read(1))
            if kind == 0:
                break
            if kind == 2:  # Bell
                continue
            if kind == 3:  # ServerCutText
                self.stream.read(3)
                (length,) = struct.unpack(">I", self.stream.read(4))
                self.stream.read(length)
                continue
            raise ConnectionError(f"unexpected server message {kind}")
        self.stream.read(1)
        (rects,) = struct.unpack(">H", self.stream.read(2))
        received = 0
        for _ in range(rects):
            _x, _y, rw, rh, encoding = struct.unpack(">HHHHi", self.stream.read(12))
            if encoding != 0:
                raise ConnectionError(f"unexpected encoding {encoding}")
            size = rw * rh * self.bytes_per_pixel
            pixels = self.stream.read(size)
            if keep is not None:
                keep.append(pixels)
            received += size
        return received


class WebSocketStream:
    """RFB over the desktop websocket (a websocket-client connection): binary messages in, a byte stream out."""

    def __init__(self, ws):
        self.ws, self.buffer = ws, bytearray()

    def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.buffer += self.ws.recv()
        data, self.buffer = bytes(self.buffer[:n]), self.buffer[n:]
        return data

    def write(self, data: bytes) -> None:
        self.ws.send_binary(data)


def painted(rfb: RFB, min_colours: int = 16) -> bool:
    """Whether the screen shows a desktop yet: a bare X server is one colour, a drawn session many."""
    keep: list = []
    rfb.request(0, 0, rfb.width, rfb.height, keep=keep)
    pixels = b"".join(keep)
    step = rfb.bytes_per_pixel * 97  # a sample across the whole screen
    colours = {pixels[i : i + rfb.bytes_per_pixel] for i in range(0, len(pixels), step)}
    return len(colours) >= min_colours


def measure(rfb: RFB, frames: int, pings: int) -> dict:
    rfb.request(0, 0, rfb.width, rfb.height)  # warm-up
    t0 = time.perf_counter()
    total = sum(rfb.request(0, 0, rfb.width, rfb.height) for _ in range(frames))
    elapsed = time.perf_counter() - t0
    rtts = []
    for _ in range(pings):
        t = time.perf_counter()
        rfb.request(0, 0, 16, 16)
        rtts.append((time.perf_counter() - t) * 1000)
    rtts.sort()
    return {
        "size": f"{rfb.width}x{rfb.height}",
        "frames_per_s": frames / elapsed,
        "mb_per_s": total / elapsed / 1e6,
        "rtt_ms_median": rtts[len(rtts) // 2],
        "rtt_ms_p90": rtts[int(len(rtts) * 0.9)],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--unix", required=True, help="VNC unix socket (a glob is fine)")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--pings", type=int, default=50)
    args = parser.parse_args()
    path = sorted(glob.glob(args.unix))[0]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    print(json.dumps(measure(RFB(SocketStream(sock)), args.frames, args.pings)))


if __name__ == "__main__":
    main()
