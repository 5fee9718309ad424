"""One runbook run, from request to result: the one gate every run passes (:mod:`agent.runs.gate`, the entry point),
the plan, the command line a host runs, the SSH executor, result records and the kept output."""
