"""The runbook catalog: manifests, the hash lock and approver signatures, shell lint for authors. The entry point
is :mod:`agent.catalog.store` (scan ``runbooks/``, verify ``runbooks.lock``, hand out verified runbooks)."""
