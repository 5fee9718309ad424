"""GUARDiA agent: a sandboxed runbook executor that dials out to a chat relay and runs only approved scripts."""

#: The package's version, read by the build (pyproject's ``[tool.setuptools.dynamic]``) as well as at run time:
#: a literal, so that starting the agent needs no ``importlib.metadata`` lookup.
__version__ = "0.1.0"
