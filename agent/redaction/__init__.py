"""Redaction: what must not leave the agent is masked on every path out (chat, logs, audit, kept output, the CLI).

This package's public surface is imported from here; :mod:`agent.redaction.engine` holds the rules and the engine.
"""

from agent.redaction.engine import (
    MAX_HOLD,
    MIN_SECRET_LENGTH,
    CappedRedactor,
    ExtraRule,
    Finding,
    InvalidRule,
    Redactor,
    StreamRedactor,
    cap_output,
    check_rule,
    secret_variants,
)

__all__ = [
    "MAX_HOLD",
    "MIN_SECRET_LENGTH",
    "CappedRedactor",
    "ExtraRule",
    "Finding",
    "InvalidRule",
    "Redactor",
    "StreamRedactor",
    "cap_output",
    "check_rule",
    "secret_variants",
]
