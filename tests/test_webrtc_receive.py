"""The caller's audio path into the server: `PromptJitterBuffer` hands each RTP packet to the
decoder as it arrives (aiortc's own buffer holds four), conceals lost packets with Opus PLC, drops
late ones; `hand_on_promptly` installs it on a peer connection's audio receivers.

Synthetic RTP packets carry real Opus frames of a tone (aiortc's encoder); what the buffer hands on
is decoded with aiortc's decoder, as its receiver would.
"""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest
from _server import offer_sdp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

from agentkit.transports._webrtc_receive import PromptJitterBuffer, hand_on_promptly, opus_frame_samples

RATE = 48000
FRAME = 960  # 20 ms


def opus_tone(count: int, hz: float = 440.0) -> list[bytes]:
    """`count` 20 ms Opus packets of a steady tone."""
    encoder = OpusEncoder()
    t = np.arange(count * FRAME) / RATE
    pcm = (0.3 * np.sin(2 * np.pi * hz * t) * 32767).astype("<i2")
    packets: list[bytes] = []
    for i in range(count):
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(pcm[i * FRAME : (i + 1) * FRAME].tobytes())
        frame.pts, frame.sample_rate, frame.time_base = i * FRAME, RATE, fractions.Fraction(1, RATE)
        packets += encoder.encode(frame)[0]
    assert len(packets) == count
    return packets


def rtp(payload: bytes, sequence: int, timestamp: int) -> RtpPacket:
    packet = RtpPacket(payload_type=111, sequence_number=sequence % 65536, timestamp=timestamp % (1 << 32))
    packet.payload = payload
    packet._data = payload  # type: ignore[attr-defined]  # what aiortc's receiver sets (depayloaded)
    return packet


def decode(decoder: OpusDecoder, frame: JitterFrame) -> np.ndarray:
    """Mono samples of what the decoder makes of `frame`."""
    out = decoder.decode(frame)
    assert len(out) == 1 and isinstance(out[0], av.AudioFrame)
    return out[0].to_ndarray().reshape(-1, 2)[:, 0].astype(np.float64)


def test_each_packet_is_handed_on_as_it_arrives() -> None:
    opus = opus_tone(8)
    prompt, aiortc_own = PromptJitterBuffer(), JitterBuffer(capacity=16, prefetch=4)
    decoder = OpusDecoder()
    own_out = []
    for i, payload in enumerate(opus):
        packet = rtp(payload, 1000 + i, 5000 + i * FRAME)
        pli, frame = prompt.add(packet)
        assert not pli and frame is not None  # at once: no waiting for later packets
        assert (frame.data, frame.timestamp) == (payload, 5000 + i * FRAME)
        assert decode(decoder, frame).shape == (FRAME,)
        own_out.append(aiortc_own.add(packet)[1])
    assert own_out[:4] == [None] * 4  # what it replaces: the first packet waits for four more
    assert own_out[4] is not None and own_out[4].timestamp == 5000
    assert (prompt.received_packets, prompt.concealed_packets, prompt.late_packets) == (8, 0, 0)


def test_lost_packets_are_concealed_by_the_decoder() -> None:
    opus = opus_tone(10)
    buffer, decoder = PromptJitterBuffer(), OpusDecoder()
    for i in range(5):
        frame = buffer.add(rtp(opus[i], 65533 + i, i * FRAME))[1]  # the sequence numbers wrap too
        assert frame is not None
        decode(decoder, frame)
    # packets 5 and 6 are lost; 7 goes at once, with 40 ms of concealment before it
    frame = buffer.add(rtp(opus[7], 65533 + 7, 7 * FRAME))[1]
    assert frame is not None and frame.timestamp == 5 * FRAME
    audio = decode(decoder, frame)
    assert audio.shape == (3 * FRAME,)  # the lost 40 ms and packet 7's own 20 ms
    concealed_rms = np.sqrt(np.mean(audio[: 2 * FRAME] ** 2))
    assert concealed_rms > 0.1 * 0.3 * 32767  # the tone goes on through the gap, not silence
    assert buffer.concealed_packets == 2
    # a late packet (its time is already concealed) and a duplicate are dropped
    assert buffer.add(rtp(opus[6], 65533 + 6, 6 * FRAME))[1] is None
    assert buffer.add(rtp(opus[7], 65533 + 7, 7 * FRAME))[1] is None
    assert buffer.late_packets == 2
    frame = buffer.add(rtp(opus[8], 65533 + 8, 8 * FRAME))[1]
    assert frame is not None and frame.data == opus[8]
    assert decode(decoder, frame).shape == (FRAME,)


def test_gaps_that_cannot_be_concealed() -> None:
    opus = opus_tone(12)
    buffer = PromptJitterBuffer()
    assert buffer.add(rtp(opus[0], 10, 0))[1] is not None
    # 120 ms is the most one Opus packet holds: 6 lost frames and the real one do not fit
    frame = buffer.add(rtp(opus[7], 17, 7 * FRAME))[1]
    assert frame is not None and (frame.data, frame.timestamp) == (opus[7], 7 * FRAME)
    assert (buffer.concealed_packets, buffer.unconcealed_packets) == (0, 6)
    # a jump of 100 or more is a restarted stream: handed on, nothing counted as lost
    frame = buffer.add(rtp(opus[8], 5000, 123456))[1]
    assert frame is not None and frame.data == opus[8]
    assert buffer.unconcealed_packets == 6
    # a packet without audio goes nowhere (an empty packet would make the decoder flush)
    assert buffer.add(rtp(b"", 5001, 123456 + FRAME))[1] is None
    assert buffer.add(rtp(opus[9], 5002, 123456 + 2 * FRAME))[1] is not None


def test_opus_frame_sizes_from_the_toc_byte() -> None:
    assert opus_frame_samples(0xFC) == 960  # CELT fullband 20 ms (what aiortc sends)
    assert opus_frame_samples(0x78) == 960  # config 15: hybrid fullband 20 ms
    assert opus_frame_samples(3 << 3) == 2880  # SILK narrowband 60 ms
    assert opus_frame_samples(16 << 3) == 120  # CELT 2.5 ms


@pytest.mark.slow
async def test_hand_on_promptly_replaces_the_audio_receivers_buffer() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=await offer_sdp(), type="offer"))
        buffers = hand_on_promptly(pc)
        (transceiver,) = [t for t in pc.getTransceivers() if t.kind == "audio"]
        assert len(buffers) == 1 and isinstance(buffers[0], PromptJitterBuffer)
        assert transceiver.receiver._RTCRtpReceiver__jitter_buffer is buffers[0]  # type: ignore[attr-defined]
    finally:
        await pc.close()
