"""Times E2B's Python SDK against a CodeBeaker server, for the benchmark of docs/e2b.md.

`python bench.py CYCLES RUNS` prints one JSON object: `cycle_ms`, the wall time of each
`Sandbox.create()` + `commands.run("echo hi")` + `kill()`, and `run_ms`, each `commands.run("echo
hi")` in one existing sandbox (the SDK's own overhead included). Every answer is checked.
"""

import json
import sys
import time

from e2b import Sandbox


def main(cycles, runs):
    # One cycle first, so that connection setup and imports are not timed.
    warm = Sandbox.create()
    warm.commands.run("echo hi")
    warm.kill()
    cycle_ms = []
    for _ in range(cycles):
        started = time.perf_counter()
        sandbox = Sandbox.create()
        out = sandbox.commands.run("echo hi").stdout
        sandbox.kill()
        cycle_ms.append((time.perf_counter() - started) * 1000)
        assert out == "hi\n", out
    sandbox = Sandbox.create()
    run_ms = []
    try:
        sandbox.commands.run("echo hi")
        for _ in range(runs):
            started = time.perf_counter()
            out = sandbox.commands.run("echo hi").stdout
            run_ms.append((time.perf_counter() - started) * 1000)
            assert out == "hi\n", out
    finally:
        sandbox.kill()
    print(json.dumps({"cycle_ms": cycle_ms, "run_ms": run_ms}))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
