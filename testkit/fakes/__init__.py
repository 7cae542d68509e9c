"""Fake HTTP servers that speak the real wire formats of the platforms the bridge talks to.

Each fake runs under uvicorn on 127.0.0.1 in a background thread, so the real SDKs (and
`smsbridge` child processes) can be pointed at it by URL; Slack's Socket Mode WebSocket end
(`FakeSocketMode`) runs under aiohttp's server the same way.
"""

from .server import FakeServer
from .slack import FakeSlack
from .slack_socket import FakeSocketMode
from .smstools import FakeSmstools
from .telegram import FakeTelegram

__all__ = ["FakeServer", "FakeSlack", "FakeSmstools", "FakeSocketMode", "FakeTelegram"]
