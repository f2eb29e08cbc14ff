"""How uvicorn should serve an agentkit app: `uvicorn_options`, used by `agentkit run` and the tests.

uvicorn's WebSocket implementation (the `websockets` one, its default when that package is installed,
as it is with agentkit) enforces `ws_max_size` on a message *while it inflates it*: with
permessage-deflate (on by default), a 16 MiB message of zeros is 16 KB on the wire, and with
uvicorn's default `ws_max_size` of 16 MiB it would be inflated and buffered whole before agentkit's
own `max_message_bytes` check could refuse it. With `ws_max_size` just above the stream's limit,
inflation stops there and uvicorn closes the connection with 1009. (uvicorn's `wsproto`
implementation only checks the size after inflating each chunk it reads, so keep the default
`--ws auto` or `--ws websockets`.)

`ws`: uvicorn's own sans-I/O WebSocket protocol with one ASGI extension, through which a phone
call's media messages are taken as they are parsed instead of through the receive queue
(`_ws_protocol.py`); its size check is the same.

`proxy_headers=False`: the client address the per-address caps count by (`transports._admission`)
is then the socket peer, never an `X-Forwarded-For` value; by default uvicorn believes that header
from a peer on 127.0.0.1 (`--forwarded-allow-ips`), i.e. from any local process. Behind a reverse
proxy every caller would then share the proxy's address (and its caps): `AGENTKIT_FORWARDED_ALLOW_IPS`
names the proxies whose forwarding headers are believed (docs/deployment.md).
"""

from __future__ import annotations

from typing import Any

from agentkit.config import load_settings
from agentkit.transports._stream import app_max_message_bytes

__all__ = ["WS_FRAMING_SLACK_BYTES", "WS_PROTOCOL", "uvicorn_options"]

WS_PROTOCOL = "agentkit.server._ws_protocol:DirectTextProtocol"
"""uvicorn's `ws`: its websockets-sansio protocol, handing media messages over as they are parsed."""

WS_FRAMING_SLACK_BYTES = 1024
"""Added to the stream's `max_message_bytes` for uvicorn's `ws_max_size`: a message a little over the
limit still reaches agentkit, which answers it with a clear `message_too_large` error before closing."""


def uvicorn_options(app: object = None) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config` that serve `app` safely: `ws_max_size`
    from the largest `max_message_bytes` of the streams mounted on it (the default one for None or an
    app without agentkit streams), and `proxy_headers=False` (or, with `AGENTKIT_FORWARDED_ALLOW_IPS`,
    forwarding headers believed from those proxies only).

    Serving an agentkit app with your own uvicorn command, pass the same:
    `uvicorn app:app --ws-max-size 66560 --no-proxy-headers --ws <WS_PROTOCOL>` (65536 + 1024 for the
    default limit; without `--ws` everything works too, media going through the receive queue).
    """
    options: dict[str, Any] = {
        "ws_max_size": app_max_message_bytes(app) + WS_FRAMING_SLACK_BYTES,
        "ws": WS_PROTOCOL,
    }
    proxies = load_settings().forwarded_allow_ips
    if proxies:
        options.update(proxy_headers=True, forwarded_allow_ips=proxies)
    else:
        options["proxy_headers"] = False
    return options
