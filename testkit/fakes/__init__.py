"""Fake HTTP servers that speak the real wire formats of the platforms the bridge talks to.

Each fake runs under uvicorn on 127.0.0.1 in a background thread, so the real SDKs (and
`smsbridge` child processes) can be pointed at it by URL.
"""

from .server import FakeServer
from .slack import FakeSlack
from .smstools import FakeSmstools
from .telegram import FakeTelegram

__all__ = ["FakeServer", "FakeSlack", "FakeSmstools", "FakeTelegram"]
