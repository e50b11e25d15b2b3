"""gwfast: a high-performance, session-affine gateway for MCP servers."""

__version__ = "0.1.0"
