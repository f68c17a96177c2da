"""A paho client that reads the socket in large chunks and acknowledges a batch in one write.

paho reads every packet with two or three `recv` calls (one byte of header, the length byte by
byte, then the body), returns to `select` after each packet, and sends each PUBACK with a
`send` of its own plus a wake-up byte to its loop thread. At QoS 1 that is five or more system
calls per message, and it is what bounds a bare paho subscriber (LIMITS.md: the subscriber, not
validation or the database, is the bottleneck). This client keeps paho's protocol handling
and changes only the I/O around it:

- the socket is wrapped in `BufferedSocket`, which fills a buffer with one `recv` of up to
  256 KiB and serves paho's small reads from it. It reports the buffered bytes through
  `pending()`, the hook paho already uses for TLS sockets, so paho does not wait in `select`
  while whole packets sit in the buffer;
- `loop_read` handles every packet already buffered before going back to `select`;
- `ack_many` queues the PUBACKs of a committed batch as one write;
- a QoS 0/1 PUBLISH without MQTT 5 properties (what devices send) is decoded without building
  a `Properties` object, which paho does for every MQTT 5 message and which took more than half
  of the receiving thread's time (cProfile: `Properties.__init__` and `clear`). Such a message
  has `properties = None`, as on MQTT 3.1.1. Anything else goes to paho's own decoder;
- with `on_publish_fast` set, such PUBLISH packets lying whole in the buffer are read straight
  from it, many per pass, and handed over as plain values: paho's reader takes a packet a byte
  at a time through a state machine of dict entries, then builds an `MQTTMessage` and takes two
  locks to find its callback: 11 us a message here (in process, on a socket faked from a
  buffer of benchmark messages); read from the buffer, about 1 us. Whatever is not such a
  packet (another type, QoS 2, properties, a topic that is not UTF-8, a packet cut by the
  buffer's end, a malformed one) stops the pass and is left to paho, which reads, refuses or
  disconnects as it always has.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.client import MQTTMessage
from paho.mqtt.enums import MQTTErrorCode

# MQTT packet types and flags (the first byte of a fixed header).
PUBLISH = 0x30
PACKET_TYPE_BITS = 0xF0
PUBACK = 0x40
PUBLISH_QOS_BITS = 0x06
PUBLISH_DUP_FLAG = 0x08
PUBLISH_RETAIN_FLAG = 0x01
# A remaining length has at most four bytes of seven bits: the last is shifted by 21.
LAST_LENGTH_SHIFT = 21
# Lengths in a PUBLISH's variable header; a plain PUBACK holds the packet id and nothing
# more, so its remaining length is `PACKET_ID_BYTES`.
TOPIC_LENGTH_BYTES = 2
PACKET_ID_BYTES = 2
# Quality of service levels.
AT_MOST_ONCE = 0
AT_LEAST_ONCE = 1
EXACTLY_ONCE = 2
# CONNACK reason codes (MQTT 5; paho 2 reports a 3.1.1 refusal with the same numbers) after
# which trying again cannot help.
BAD_USERNAME_OR_PASSWORD = 134
NOT_AUTHORIZED = 135
CREDENTIALS_REFUSED = frozenset({BAD_USERNAME_OR_PASSWORD, NOT_AUTHORIZED})
# The largest value of an MQTT 5 two-byte integer property (ReceiveMaximum, say).
TWO_BYTE_INTEGER_MAX = 65535

# What one `recv` asks for when the buffer is empty.
READ_CHUNK_BYTES = 256 * 1024
# How many buffered packets one `loop_read` handles before paho's loop gets to write (acks,
# pings) again.
MAX_PACKETS_PER_READ = 1000


class BufferedSocket:
    """A non-blocking socket whose reads come from a buffer refilled one large `recv` at a
    time. Everything but `recv` and `pending` goes to the socket underneath."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""
        self._pos = 0

    def recv(self, size: int) -> bytes:
        available = len(self._buffer) - self._pos
        if available == 0:
            # Raises BlockingIOError when nothing is there, as a bare socket does; returns b""
            # when the peer closed, which paho reads as a lost connection.
            data = self._sock.recv(max(size, READ_CHUNK_BYTES))
            if len(data) <= size:
                return data
            self._buffer, self._pos = data, 0
            available = len(data)
        take = min(size, available)
        start = self._pos
        self._pos += take
        chunk = self._buffer[start : self._pos]
        if self._pos == len(self._buffer):
            self._buffer, self._pos = b"", 0
        return chunk

    def fill(self) -> bool:
        """Read what the socket holds into an empty buffer; whether the buffer holds anything.
        Errors and a closed peer are left for the next `recv`, which meets them again."""
        if self._pos == len(self._buffer):
            try:
                data = self._sock.recv(READ_CHUNK_BYTES)
            except OSError:  # BlockingIOError too: nothing there yet
                return False
            self._buffer, self._pos = data, 0
        return self._pos < len(self._buffer)

    def buffered(self) -> tuple[bytes, int]:
        """The buffer and where its unread part starts (for `Client`'s own reader)."""
        return self._buffer, self._pos

    def consumed(self, pos: int) -> None:
        """The buffer was read up to `pos`."""
        if pos >= len(self._buffer):
            self._buffer, self._pos = b"", 0
        else:
            self._pos = pos

    def pending(self) -> int:
        """Bytes read from the socket and not yet handed to paho."""
        return len(self._buffer) - self._pos

    def send(self, data: bytes | bytearray) -> int:
        return self._sock.send(data)

    def close(self) -> None:
        self._buffer, self._pos = b"", 0
        self._sock.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


# A PUBLISH as `on_publish_fast` is given it: topic, payload, packet id, QoS, DUP flag.
Publish = tuple[str, bytes, int, int, bool]
# `on_publish_fast` takes a run of them, in the order they came, and when they were read.
FastPublish = Callable[[list[Publish], datetime], None]


class Client(mqtt.Client):
    """`paho.mqtt.client.Client` with buffered reads and batched acknowledgements."""

    # Takes plain PUBLISH packets read straight from the buffer (see the module); when None,
    # every message goes through paho's `on_message`.
    on_publish_fast: FastPublish | None = None

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        # TLS sockets already read whole records and have `pending()` of their own; websockets
        # frame their own reads.
        if isinstance(sock, socket.socket) and not self._ssl:
            return BufferedSocket(sock)
        return sock

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        self._read_fast(fill=True)
        rc = super().loop_read(max_packets)
        for _ in range(MAX_PACKETS_PER_READ):
            sock = self._sock
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not isinstance(sock, BufferedSocket):
                break
            self._read_fast(fill=False)
            if sock.pending() == 0:
                break
            rc = super().loop_read(max_packets)
        return rc

    def _read_fast(self, fill: bool) -> None:
        """The buffer reader's pass, when it is on; `fill` first reads the socket into an
        empty buffer (at the start of `loop_read`, where paho would read it)."""
        sock, deliver = self._sock, self.on_publish_fast
        # Only between packets: paho may be halfway through one, its state in `_in_packet`.
        if deliver is None or not isinstance(sock, BufferedSocket) or self._in_packet["command"]:
            return
        if sock.fill() if fill else sock.pending():
            self._read_publishes(sock, deliver)

    def _read_publishes(self, sock: BufferedSocket, deliver: FastPublish) -> None:
        """Hand over, as one run, every plain PUBLISH lying whole at the start of the buffer;
        stop at the first packet that is anything else, for paho."""
        data, pos = sock.buffered()
        end_of_data = len(data)
        v5 = self._protocol == mqtt.MQTTv5
        run: list[Publish] = []
        while pos < end_of_data:
            header = data[pos]
            qos = (header & PUBLISH_QOS_BITS) >> 1
            if header & PACKET_TYPE_BITS != PUBLISH or qos > AT_LEAST_ONCE:
                break
            # The remaining length: up to four bytes, seven bits each, low first.
            length, shift, at = 0, 0, pos + 1
            while at < end_of_data and shift <= LAST_LENGTH_SHIFT:
                byte = data[at]
                length |= (byte & 0x7F) << shift
                at += 1
                if not byte & 0x80:
                    break
                shift += 7
            else:
                break  # cut by the buffer's end, or malformed: paho's to read
            packet_end = at + length
            topic_end = at + TOPIC_LENGTH_BYTES
            if packet_end > end_of_data or topic_end > packet_end:
                break
            topic_end += int.from_bytes(data[at:topic_end], "big")
            body = topic_end + PACKET_ID_BYTES if qos else topic_end
            if v5:
                # A property length of 0, one byte; anything else goes to paho.
                if body >= packet_end or data[body] != 0:
                    break
                body += 1
            if body > packet_end:
                break
            try:
                topic = data[at + TOPIC_LENGTH_BYTES : topic_end].decode()
            except UnicodeDecodeError:
                break
            mid = int.from_bytes(data[topic_end : topic_end + PACKET_ID_BYTES], "big") if qos else 0
            run.append((topic, data[body:packet_end], mid, qos, bool(header & PUBLISH_DUP_FLAG)))
            pos = packet_end
        if not run:
            return
        sock.consumed(pos)
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        with self._in_callback_mutex:
            deliver(run, datetime.now(UTC))
        if not self._manual_ack:
            for _, _, mid, qos, _ in run:
                if qos == AT_LEAST_ONCE:
                    self._send_puback(mid)

    def _handle_publish(self) -> MQTTErrorCode:
        header = self._in_packet["command"]
        packet = self._in_packet["packet"]
        qos = (header & PUBLISH_QOS_BITS) >> 1
        if self._protocol != mqtt.MQTTv5 or qos > AT_LEAST_ONCE:
            return super()._handle_publish()
        # Variable header: topic length (2 bytes), topic, packet id (QoS > 0), property length.
        topic_end = TOPIC_LENGTH_BYTES + int.from_bytes(packet[:TOPIC_LENGTH_BYTES], "big")
        end = topic_end + PACKET_ID_BYTES if qos else topic_end
        if len(packet) <= end or packet[end] != 0:
            # Properties present (or a malformed packet): paho decodes it, or refuses it.
            return super()._handle_publish()
        mid = int.from_bytes(packet[topic_end:end], "big") if qos else 0
        message = MQTTMessage(mid=mid, topic=bytes(packet[TOPIC_LENGTH_BYTES:topic_end]))
        message.dup = bool(header & PUBLISH_DUP_FLAG)
        message.qos = qos
        message.retain = bool(header & PUBLISH_RETAIN_FLAG)
        message.payload = bytes(packet[end + 1 :])
        message.timestamp = time.monotonic()
        self._handle_on_message(message)
        if qos == AT_LEAST_ONCE and not self._manual_ack:
            return self._send_puback(mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_many(self, mids: Iterable[int]) -> MQTTErrorCode:
        """PUBACK every QoS 1 message id in `mids`, as one write. Only with `manual_ack`."""
        if not self._manual_ack:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        packet = b"".join(struct.pack("!BBH", PUBACK, PACKET_ID_BYTES, mid) for mid in mids)
        if not packet:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        # One queued write of many PUBACK packets: the wire format is the same as paho's own
        # `ack` (fixed header, length 2, packet id), which MQTT 5 reads as reason "success".
        return self._packet_queue(PUBACK, packet, mid=0, qos=AT_LEAST_ONCE)
