"""The three cloud fakes for `bench/load_agents/cloud.py`, served until SIGINT/SIGTERM.

Prints one JSON line with their base URLs once they listen. Every request is answered with the
fakes' default reply (a short transcript, a short LLM answer, a tone); the request log is trimmed
so that a long run does not grow.
"""

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agentkit.testing import FakeAnthropic, FakeElevenLabs, FakeGroq, Reply

KEY = "bench-key"


async def main() -> None:
    fakes = {
        "groq": FakeGroq(api_key=KEY, default=Reply(text="What are your opening hours today?")),
        "anthropic": FakeAnthropic(api_key=KEY, default=Reply(text="We are open until six. Anything else?")),
        "elevenlabs": FakeElevenLabs(api_key=KEY),
    }
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    for fake in fakes.values():
        await fake.start()
    print(json.dumps({name: fake.base_url for name, fake in fakes.items()}), flush=True)
    while not stop.is_set():
        for fake in fakes.values():
            del fake.requests[:-100]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5.0)
    for fake in fakes.values():
        await fake.stop()


if __name__ == "__main__":
    asyncio.run(main())
