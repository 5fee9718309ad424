"""What the chat text costs on the one outbound path: redaction alone vs redaction plus rendering ``payload.text``.

A typical TASK_FINISHED of RUN_RUNBOOK (two hosts, 40 lines of output each, one host message as a Msg) goes through
the redactor, as every outbound message does, and then is rendered in Korean and in English from the redacted JSON
(catalog look-ups, the messages' ``i18n`` templates, neutralising). Interleaved rounds; median and spread per message.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from agent.chat.i18n import Chat, Msg
from agent.chat.render import render_finished
from agent.redaction import Redactor
from agent.runs.results import HostResult, Outcome, RunResult
from agent.session.protocol import Status, finished_message

ROUNDS = 21
PER_ROUND = 20


def _message() -> dict[str, Any]:
    output = "".join(f"2026-11-28 14:05:{i:02d} INFO request {i} from 10.1.2.{i} ok\n" for i in range(40))
    result = RunResult("tail_log", "0" * 64, [
        HostResult("was01", Outcome.SUCCESS, 0, 0.21, stdout=output),
        HostResult("was02", Outcome.TIMEOUT, None, 30.0, stdout=output, truncated=True, stdout_cut=4096,
                   message=Msg("killed at the {limit:g} s time limit", limit=30.0)),
    ])  # fmt: skip
    data = {**result.to_json(), "output_ref": "t-1"}
    message: dict[str, Any] = json.loads(json.dumps(finished_message("t-1", "ops", Status.FAIL, data)))
    return message


def _per_message(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    for _ in range(PER_ROUND):
        work()
    return (time.perf_counter() - started) / PER_ROUND * 1e6


def main() -> None:
    redactor, message = Redactor(), _message()
    ko, en = Chat("ko"), Chat("en")

    def redact_only() -> object:
        return redactor.redact_json(message)

    def redact_and_render(chat: Chat) -> Callable[[], object]:
        def work() -> object:
            redacted = redactor.redact_json(message)
            return render_finished(chat, redacted["payload"], "RUN_RUNBOOK")

        return work

    cases = {"redact only": redact_only, "redact + text (ko)": redact_and_render(ko),
             "redact + text (en)": redact_and_render(en)}  # fmt: skip
    timings: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(ROUNDS):  # interleaved, so drift hits every case alike
        for name, work in cases.items():
            timings[name].append(_per_message(work))
    base = statistics.median(timings["redact only"])
    for name, values in timings.items():
        median = statistics.median(values)
        spread = (max(values) - min(values)) / median * 100
        print(
            f"   {name:20s} {median:8.1f} µs/message (spread {spread:4.0f}%)  x{median / base:.2f} of redact only"
        )


if __name__ == "__main__":
    main()
