"""Run the benchmarks: ``python -m benchmarks [NAME ...] [--write]`` (names: the bench_*.py modules without the
prefix).

With ``--write``, what each benchmark prints is also kept and, as soon as it has finished, its section of
docs/benchmarks.md is rewritten (``<!-- bench:NAME:begin -->`` … ``<!-- bench:NAME:end -->``, see
:mod:`benchmarks.report`); the sections of benchmarks that did not run are left as they were.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import sys
import time

import benchmarks
from benchmarks import report

WRITE = "--write"


def main(argv: list[str]) -> int:
    names = sorted(
        m.name[len("bench_") :]
        for m in pkgutil.iter_modules(benchmarks.__path__)
        if m.name.startswith("bench_")
    )
    write = WRITE in argv
    chosen = [arg for arg in argv if arg != WRITE] or names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(names)}", file=sys.stderr)
        return 2
    for name in chosen:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        module = importlib.import_module(f"benchmarks.bench_{name}")
        if write:
            machine, tee = report.this_machine(), report.Tee(sys.stdout)
            with contextlib.redirect_stdout(tee):
                module.main()
            seconds = time.perf_counter() - started
            section = report.render_section(name, tee.getvalue(), machine, seconds)
            report.write_sections({name: section})
            print(f"   (wrote its section of {report.DOC.name})", flush=True)
        else:
            module.main()
        print(f"   ({time.perf_counter() - started:.1f} s)\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
