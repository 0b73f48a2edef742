"""Entry point: `python -m sidecar ...`."""

import sys

# The sidecar speaks no TLS: REST on loopback, gRPC and libvirt over unix sockets. Keeping
# Python's OpenSSL bindings out (asyncio and hmac import them when they can, and work without)
# saves ~1.8 MiB of RSS per VM in a container capped at 64M (docs/performance.md). `None` in
# sys.modules makes their import fail, which those modules handle.
for _name in ("ssl", "_ssl", "_hashlib"):
    sys.modules.setdefault(_name, None)  # type: ignore[arg-type]

from sidecar.cli import main  # noqa: E402 - after the blocks above, on purpose

sys.exit(main())
