"""The caller's audio from aiortc's RTP receiver to its decoder, without a playout delay.

aiortc's audio receiver reassembles packets in a `JitterBuffer(capacity=16, prefetch=4)`: a packet
goes to the decoder only once four more have arrived, 80 ms after it, plus the 20 ms it takes to see
that a frame is complete. That buffer is meant for playout, where late packets must be waited for;
the server never plays the caller's audio, it hands it to voice activity detection and speech
recognition, which want each 20 ms as soon as it exists. `PromptJitterBuffer` hands every packet on
as it arrives, in order:

- the next packet in sequence goes to the decoder at once;
- a packet after a gap (lost packets) goes at once too, behind Opus packet loss concealment for the
  missing ones: it is rewritten as one Opus packet (RFC 6716 code 3) whose first frames are empty,
  which libopus decodes as concealment, so the decoder's state and the audio's length stay right;
- a packet older than one already handed on (late, reordered or duplicated) is dropped: its time
  was already filled by concealment.

`hand_on_promptly(pc)` gives each audio receiver of a peer connection one, after
`setRemoteDescription` made the receivers and before any packet arrives. aiortc has no setting for
its receiver's buffer, so this sets the receiver's private attribute; if a later aiortc no longer
has it, aiortc's own buffer stays (with a warning) and audio still flows, 80 ms later.
"""

from __future__ import annotations

import logging

from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

__all__ = ["PromptJitterBuffer", "hand_on_promptly", "opus_frame_samples"]

logger = logging.getLogger(__name__)

_RECEIVER_BUFFER = "_RTCRtpReceiver__jitter_buffer"
"""Where `aiortc.RTCRtpReceiver` keeps its jitter buffer (a name-mangled private attribute)."""
_MAX_GAP = 100
"""A jump of this many sequence numbers or more is a restarted stream, not lost packets."""
_MAX_PACKET_SAMPLES = 5760
"""An Opus packet holds at most 120 ms (at 48 kHz): concealment for longer gaps is left out."""
_SAMPLES_PER_MS = 48  # Opus always counts 48 kHz, in RTP timestamps and in its TOC byte


def opus_frame_samples(toc: int) -> int:
    """Samples (at 48 kHz) in each frame of an Opus packet with this TOC byte (RFC 6716 3.1)."""
    config = toc >> 3
    if config < 12:  # SILK: 10, 20, 40, 60 ms
        return (10, 20, 40, 60)[config % 4] * _SAMPLES_PER_MS
    if config < 16:  # hybrid: 10, 20 ms
        return (10, 20)[config % 2] * _SAMPLES_PER_MS
    return (120, 240, 480, 960)[config % 4]  # CELT: 2.5, 5, 10, 20 ms


def _with_concealment(payload: bytes, missing: int) -> bytes | None:
    """`payload` (a one-frame Opus packet) behind `missing` empty frames, as one code 3 packet;
    None when that cannot be written (another packet code, or over 120 ms)."""
    toc = payload[0]
    if toc & 0x03 != 0 or (missing + 1) * opus_frame_samples(toc) > _MAX_PACKET_SAMPLES:
        return None
    count = 0x80 | (missing + 1)  # VBR, no padding, M frames
    # VBR lengths of the first M-1 frames (0 each: lost, to conceal); the last takes the rest
    return bytes([toc | 0x03, count, *([0] * missing)]) + payload[1:]


class PromptJitterBuffer(JitterBuffer):
    """An audio "jitter buffer" that holds nothing (see the module docstring).

    Called by aiortc's receiver for every RTP packet, with the packet's Opus payload already in
    `packet._data`; returns what to decode now. Counts what it did in `received_packets` (all),
    `concealed_packets` (lost packets replaced by concealment), `late_packets` (dropped) and
    `unconcealed_packets` (lost packets that could not be concealed: a gap over 120 ms or a packet
    code other than 0).
    """

    def __init__(self) -> None:
        super().__init__(capacity=1)  # the base class's buffer is not used
        self._next_sequence: int | None = None
        self.received_packets = 0
        self.concealed_packets = 0
        self.late_packets = 0
        self.unconcealed_packets = 0

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        self.received_packets += 1
        data: bytes = getattr(packet, "_data", packet.payload)
        missing = 0
        if self._next_sequence is not None:
            ahead = uint16_add(packet.sequence_number, -self._next_sequence)
            if ahead >= 0x8000:  # behind what was handed on already
                self.late_packets += 1
                return False, None
            if ahead < _MAX_GAP:
                missing = ahead
        self._next_sequence = uint16_add(packet.sequence_number, 1)
        if not data:  # no audio in it (padding only): an empty packet would make the decoder flush
            self.unconcealed_packets += missing
            return False, None
        timestamp = packet.timestamp
        if missing:
            concealed = _with_concealment(data, missing)
            if concealed is None:
                self.unconcealed_packets += missing
            else:  # the packet now starts where the first missing one did
                self.concealed_packets += missing
                timestamp = (timestamp - missing * opus_frame_samples(data[0])) % (1 << 32)
                data = concealed
        return False, JitterFrame(data=data, timestamp=timestamp)


def hand_on_promptly(pc: RTCPeerConnection) -> list[PromptJitterBuffer]:
    """Give each audio receiver of `pc` a `PromptJitterBuffer`; returns them (one per receiver that
    took one). Call after `setRemoteDescription`, before the connection carries audio."""
    buffers = []
    for transceiver in pc.getTransceivers():
        if transceiver.kind != "audio":
            continue
        receiver = transceiver.receiver
        if not isinstance(getattr(receiver, _RECEIVER_BUFFER, None), JitterBuffer):
            logger.warning("webrtc: this aiortc has no receiver jitter buffer to replace; keeping its own")
            continue
        buffer = PromptJitterBuffer()
        setattr(receiver, _RECEIVER_BUFFER, buffer)
        buffers.append(buffer)
    return buffers
