"""scripts/test-windows: the agent as Windows processes (a python.org CPython under Wine), driven from Linux."""
