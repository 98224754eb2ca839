"""FrameBuffer on its own: frames across reads, several in one read, garbage, cut and oversized frames."""

from __future__ import annotations

from node.hl7.framing import FrameBuffer, Oversized


def test_frames_split_anywhere_and_several_in_one_read():
    buffer = FrameBuffer(max_bytes=100)
    stream = b"\x0bMSH|one\r\x1c\r\x0bMSH|two\r\x1c\r\x0bMSH|three\r\x1c\r"
    frames = [frame for byte in stream for frame in buffer.feed(bytes([byte]))]  # one byte per read
    assert frames == [b"MSH|one\r", b"MSH|two\r", b"MSH|three\r"]
    assert buffer.feed(stream) == frames and not buffer.partial


def test_garbage_outside_frames_and_a_frame_cut_short_are_counted_and_dropped():
    buffer = FrameBuffer(max_bytes=100)
    assert buffer.feed(b"noise\x1c\r\x0bMSH|cut") == [] and buffer.partial
    assert buffer.feed(b"\x0bMSH|whole\x1c\rtail") == [b"MSH|whole"]
    assert (buffer.dropped, buffer.truncated, buffer.partial) == (11, 1, False)


def test_an_oversized_frame_is_reported_once_and_skipped_to_its_end():
    buffer = FrameBuffer(max_bytes=10)
    first = buffer.feed(b"\x0bMSH|12345678901234")
    assert first == [Oversized(10, b"MSH|12345678901234")] and buffer.partial
    assert buffer.feed(b"more and more\x1c") == [] and buffer.partial  # the end block split over reads
    assert buffer.feed(b"\r\x0bMSH|ok\x1c\r") == [b"MSH|ok"] and not buffer.partial
    assert buffer.feed(b"\x0bMSH|12345678901234 cut short") == [
        Oversized(10, b"MSH|12345678901234 cut short")
    ]
    assert buffer.feed(b"\x0bMSH|next\x1c\r") == [b"MSH|next"]  # a new start ends the skipping too
    assert FrameBuffer(max_bytes=10).feed(b"\x0bMSH|12345678901\x1c\r\x0bMSH|ok\x1c\r") == [
        Oversized(10, b"MSH|12345678901"),
        b"MSH|ok",
    ]
