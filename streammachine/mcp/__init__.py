"""StreamMachine's MCP server (``streammachine-mcp``); see ``streammachine.mcp.server``."""
from .server import StreamMachineMCP, build_server, main, serve

__all__ = ["StreamMachineMCP", "build_server", "main", "serve"]
