"""``python -m streammachine``.

With no arguments it serves the MCP tools over stdio (as the reference
documents, the same as ``streammachine-mcp``); with arguments it is the
``streammachine`` command (``python -m streammachine run app.py``).
"""
import sys


def main() -> int:
    if len(sys.argv) > 1:
        from .cli import main as cli_main

        return cli_main(sys.argv[1:])
    from .mcp.server import main as mcp_main

    return mcp_main([])


if __name__ == "__main__":
    sys.exit(main())
