"""Transports: each turns its wire format into audio in and out of a `Session`.

`Stream` (the core's `SessionHost` with endpoints) and `mount` are light; the transports themselves
(`agentkit.transports.websocket`, `.webrtc`, `.twilio`) import FastAPI, Starlette or aiortc, so they
are imported only when used.
"""

from agentkit.transports._stream import MountedTransports, Stream, mount

__all__ = ["MountedTransports", "Stream", "mount"]
