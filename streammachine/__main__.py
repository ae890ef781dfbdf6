"""``python -m streammachine``: the ``streammachine`` command.

With no arguments it serves MCP over stdio (the reference documents
``python -m streammachine`` as an MCP server command), but only for a client
that launched it on a pipe: typed at a terminal it shows the commands
instead of waiting silently for JSON-RPC.
"""

import sys

from streammachine.cli import main, mcp_main


def entry() -> int:
    if len(sys.argv) > 1:
        return main(sys.argv[1:])
    if sys.stdin.isatty():
        return main(["--help"])
    return mcp_main([])


if __name__ == "__main__":
    sys.exit(entry())
