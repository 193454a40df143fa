"""The demo's fallback MQTT broker when mosquitto is not installed: amqtt in a process of its own.

In the demo's process its event loop shared the GIL and the cores with the scoring thread and starved it
(on a 2-core box 77 of 176 clips skipped against 11 with mosquitto; docs/research/rtsp-and-demo-broker.md). Run as
`python -m vad_edge.demo_broker PORT`; it exits when its stdin closes, so it never outlives the demo, even
one that is killed.
"""

import asyncio
import logging
import sys


async def serve(port: int) -> None:
    from amqtt.broker import Broker

    settings = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}}
    broker = Broker(settings)
    await broker.start()
    # The demo holds our stdin's other end: end of file means it is gone.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)
    await broker.shutdown()


def main() -> None:
    logging.basicConfig(level=logging.CRITICAL)  # amqtt logs every client's hiccup as an error
    asyncio.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
