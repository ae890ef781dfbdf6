"""The MCP server as a module-level object, for the SDK's own tooling.

``mcp dev streammachine/mcp_fast.py --with-editable .`` (the reference's MCP
Inspector command; it needs ``pip install "mcp[cli]"`` and Node's ``npx``)
imports a file and looks for a server named ``mcp``, ``server`` or ``app``.
Building it opens no connection: the server connects to Redis in its
lifespan, when a client session starts. Nothing else imports this module.
"""

from streammachine.mcp.server import build_server

mcp = build_server()

__all__ = ["mcp"]
