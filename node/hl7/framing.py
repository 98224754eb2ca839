"""MLLP frames out of a server's byte stream (the framing bytes are `exporters.mllp`'s).

Unlike the client's `exporters.mllp.FrameReader` (one ACK, then the connection ends), a listener
reads many messages from one connection, several may come in one read, and a sender may be hostile
or broken. `FrameBuffer.feed` therefore returns every complete frame, and:

- bytes outside a frame are dropped and counted (`dropped`);
- a start block inside a frame ends that frame unfinished (it is dropped, counted in `truncated`) and
  starts a new one;
- a frame longer than `max_bytes` comes out as `Oversized`, carrying its first bytes (so the listener
  can answer the message's MSH-10), and the rest of that frame is discarded up to its end block (or
  the next start block), so the connection can go on with the next message.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporters.mllp import END_BLOCK, START_BLOCK, frame

HEAD_BYTES = 8192  # of an oversized frame, kept to read its MSH

__all__ = ["FrameBuffer", "Oversized", "frame"]


@dataclass(frozen=True)
class Oversized:
    """A frame longer than the limit; `head` holds its first bytes (after the start block)."""

    limit: int
    head: bytes


class FrameBuffer:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.dropped = 0  # bytes seen outside any frame
        self.truncated = 0  # frames that a new start block cut short
        self._buffer = bytearray()
        self._in_frame = False
        self._discarding = False  # inside an oversized frame: drop up to its end block

    @property
    def partial(self) -> bool:
        """A frame (or an oversized one being discarded) has started and not ended."""
        return self._in_frame or self._discarding

    def feed(self, chunk: bytes) -> list[bytes | Oversized]:
        """The frames completed by `chunk`, in order: their payloads, or `Oversized` for one too long."""
        self._buffer += chunk
        frames: list[bytes | Oversized] = []
        while self._buffer:
            if self._discarding:  # up to the oversized frame's end, or a new frame's start
                end, restart = self._buffer.find(END_BLOCK), self._buffer.find(START_BLOCK)
                if restart != -1 and (end == -1 or restart < end):
                    del self._buffer[:restart]
                elif end != -1:
                    del self._buffer[: end + len(END_BLOCK)]
                else:
                    keep = 1 if self._buffer.endswith(END_BLOCK[:1]) else 0
                    del self._buffer[: len(self._buffer) - keep]
                    break
                self._discarding = False
                continue
            if not self._in_frame:
                start = self._buffer.find(START_BLOCK)
                if start == -1:
                    self.dropped += len(self._buffer)
                    self._buffer.clear()
                    break
                self.dropped += start
                del self._buffer[: start + 1]
                self._in_frame = True
            end = self._buffer.find(END_BLOCK)
            restart = self._buffer.find(START_BLOCK)
            if restart != -1 and (end == -1 or restart < end):
                self.truncated += 1
                del self._buffer[:restart]
                self._in_frame = False
                continue
            if (end == -1 and len(self._buffer) > self.max_bytes) or end > self.max_bytes:
                head = self._buffer[: min(HEAD_BYTES, end if end != -1 else len(self._buffer))]
                frames.append(Oversized(self.max_bytes, bytes(head)))
                self._in_frame, self._discarding = False, True
                continue
            if end == -1:
                break
            frames.append(bytes(self._buffer[:end]))
            del self._buffer[: end + len(END_BLOCK)]
            self._in_frame = False
        return frames
