"""StreamMachine's MCP server (``streammachine-mcp``, started from ``streammachine.cli``); see ``.server``."""

from streammachine.mcp.server import StreamMachineMCP, build_server, serve

__all__ = ["StreamMachineMCP", "build_server", "serve"]
