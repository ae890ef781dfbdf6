"""``python -m streammachine.mcp_server``: the MCP server over stdio, the reference's command.

A compatibility name: the server is ``streammachine.mcp.server`` and every
console entry point lives in ``streammachine.cli``.
"""

import sys

from streammachine.cli import mcp_main as main
from streammachine.mcp.server import build_server

__all__ = ["build_server", "main"]

if __name__ == "__main__":
    sys.exit(main())
