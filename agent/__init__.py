"""GUARDiA agent: a sandboxed runbook executor that dials out to a chat relay and runs only approved scripts."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("guardia-agent")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0.0.0+source"
