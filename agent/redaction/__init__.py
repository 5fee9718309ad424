"""Redaction: what must not leave the agent is masked on every path out (chat, logs, audit, kept output, the CLI).

Pure functions, no I/O. Everything the agent sends or logs passes a :class:`Redactor`. It masks internal addresses
(an address the inventory knows becomes its host alias), credentials, private keys, well-known token shapes, the
agent's own secrets in every encoding, Korean personal data, and whatever extra rules the config and the runbook's
manifest add: the table of built-in rules is :data:`agent.redaction.rules.RULES`, shown in docs/security.md.

This package's public surface is imported from here. Its modules, lowest first:

* :mod:`~agent.redaction.normalise`: terminal escapes removed, look-alike characters matched as ASCII;
* :mod:`~agent.redaction.values`: what decides whether a match is sensitive (address readings, Luhn, secret forms);
* :mod:`~agent.redaction.rules`: the rule table (pattern, mask, description), extra rules and their checks;
* :mod:`~agent.redaction.search`: the rules as one RE2 search, and which rule a match is;
* :mod:`~agent.redaction.handlers`: a handler per rule, deciding on a candidate and building its mask;
* :mod:`~agent.redaction.stream`: :class:`StreamRedactor`, :class:`CappedRedactor`, :func:`cap_output`;
* :mod:`~agent.redaction.redactor`: the :class:`Redactor` itself;
* :mod:`~agent.redaction.table`: the Markdown table of the rules for docs/security.md.
"""

from agent.redaction.redactor import Redactor
from agent.redaction.rules import ExtraRule, Finding, InvalidRule, check_rule
from agent.redaction.stream import MAX_HOLD, CappedRedactor, StreamRedactor, cap_output
from agent.redaction.values import MIN_SECRET_LENGTH, secret_variants

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
