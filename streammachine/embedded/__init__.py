"""A private Valkey/Redis server: the default when no Redis is configured.

``EmbeddedServer`` (server.py) runs one ``valkey-server`` process on loopback
with a random password; tests use it for private servers they can stop, kill,
pause and restart. ``shared_server_url()`` (shared.py) is the per-user
default: it starts (or attaches to) a daemonised server whose URL is kept in a
0600 runtime file so every process of the user finds the same server.
"""

from streammachine.embedded.server import EmbeddedServer, EmbeddedServerError, find_server_binary, free_port, ping
from streammachine.embedded.shared import (
    RUNTIME_FILE,
    default_url,
    read_runtime_file,
    recover_shared_server,
    shared_server_status,
    shared_server_url,
    start_shared_server,
    stop_shared_server,
    url_address,
)

__all__ = [
    "RUNTIME_FILE",
    "EmbeddedServer",
    "EmbeddedServerError",
    "default_url",
    "find_server_binary",
    "free_port",
    "ping",
    "read_runtime_file",
    "recover_shared_server",
    "shared_server_status",
    "shared_server_url",
    "start_shared_server",
    "stop_shared_server",
    "url_address",
]
