"""The keyed, anchored audit chain: what one append costs (issue 27, item 3).

Each append now computes an HMAC-SHA256 (was: sha256) and rewrites the anchored head (``audit.head``, one fixed-size
record in place). Baseline, measured in the same run: the same appends with the head's rewrite left out and a plain
sha256 in place of the HMAC (the chain as it was), so the ratio is what keying and anchoring add. Also: ``anchor()``
(the head sent with every final answer) when nothing else wrote meanwhile.
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.state import audit

COUNT = 2000
REPEAT = 5
FIELDS: dict[str, Any] = {"task_id": "t-12345", "room_id": "ops", "user_id": "kim", "action": "RUN_RUNBOOK",
                          "params": {"runbook": "disk_usage", "hosts": ["was01", "was02"], "args": {"mount": "/"}}}  # fmt: skip


def appends(folder: Path, anchored: bool) -> float:
    log = audit.AuditLog(folder / "audit.jsonl")
    if not anchored:
        log._write_head = lambda: None  # type: ignore[method-assign]
    started = time.perf_counter()
    for _ in range(COUNT):
        log.append("command", **FIELDS)
    elapsed = time.perf_counter() - started
    log.close()
    return elapsed / COUNT


def main() -> None:
    keyed_runs, plain_runs, anchor_runs = [], [], []
    for _ in range(REPEAT):
        with tempfile.TemporaryDirectory() as tmp:
            keyed_runs.append(appends(Path(tmp), anchored=True))
            log = audit.AuditLog(Path(tmp) / "audit.jsonl")
            log.anchor()
            started = time.perf_counter()
            for _ in range(COUNT):
                log.anchor()
            anchor_runs.append((time.perf_counter() - started) / COUNT)
            log.close()
        with tempfile.TemporaryDirectory() as tmp:
            keyed_hash = audit.entry_hash
            audit.entry_hash = lambda entry, key=None: hashlib.sha256(
                audit._canonical({k: v for k, v in entry.items() if k != "hash"})
            ).hexdigest()
            try:
                plain_runs.append(appends(Path(tmp), anchored=False))
            finally:
                audit.entry_hash = keyed_hash
    keyed, plain, anchor = (statistics.median(r) for r in (keyed_runs, plain_runs, anchor_runs))
    print(f"   append, keyed + anchored head : {keyed * 1e6:7.1f} µs")
    print(f"   append, sha256, no head (was) : {plain * 1e6:7.1f} µs   (baseline)")
    print(f"   ratio                         : {keyed / plain:7.2f}x")
    print(f"   anchor() for a final answer   : {anchor * 1e6:7.1f} µs")
