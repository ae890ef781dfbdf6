"""``python -m streammachine.mcp_server``: the MCP server (stdio by default), as the reference names it.

The server lives in ``streammachine.mcp.server``; this module keeps the
reference's entry point working.
"""
import sys

from .mcp.server import build_server, main

__all__ = ["build_server", "main"]

if __name__ == "__main__":
    sys.exit(main())
