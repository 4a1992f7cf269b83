"""The flows a user of E2B's code interpreter SDK (`e2b-code-interpreter`) runs, against a
CodeBeaker server.

Run as `python interpreter_flows.py <flow>` with E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY
set. Each check prints `ok: <what>`; the first that fails raises, so the exit status is non-zero
and the traceback names it. `bench` prints timings instead of checks.
"""

import base64
import json
import sys
import time

from e2b_code_interpreter import Sandbox


def check(what, ok, got=None):
    if not ok:
        raise AssertionError(f"{what}: got {got!r}")
    print(f"ok: {what}", flush=True)


def statefulness():
    sandbox = Sandbox.create()
    try:
        first = sandbox.run_code("x = 1")
        check("an assignment has no result", first.results == [] and first.error is None, first)
        second = sandbox.run_code("x += 1; x")
        check("state persists between cells", second.text == "2", second.text)
        check("the main result is marked", second.results[0].is_main_result, second.results)
        check("number_of_executions", second.execution_count == 2, second.execution_count)
        sandbox.run_code("import math")
        check("an import persists", sandbox.run_code("math.sqrt(16)").text == "4.0")
        sandbox.run_code("class Counter:\n    def __init__(self):\n        self.n = 0\n    def up(self):\n        self.n += 1\n        return self.n")
        check("a class from an earlier cell", sandbox.run_code("c = Counter(); c.up(); c.up()").text == "2")
        printed = sandbox.run_code("print('hello')\n'value'")
        check("print goes to logs.stdout", printed.logs.stdout == ["hello\n"], printed.logs)
        check("the final expression is the result", printed.text == "'value'", printed.text)
    finally:
        sandbox.kill()


def errors():
    sandbox = Sandbox.create()
    try:
        sandbox.run_code("kept = 'yes'")
        failed = sandbox.run_code("def f():\n    raise ValueError('bad value')\nf()")
        check("an exception is execution.error", failed.error is not None, failed)
        check("its name", failed.error.name == "ValueError", failed.error.name)
        check("its value", failed.error.value == "bad value", failed.error.value)
        check("its traceback points at the cell", "line 2" in failed.error.traceback, failed.error.traceback)
        check("earlier state is intact", sandbox.run_code("kept").text == "'yes'")
        slow = sandbox.run_code("import time\ntime.sleep(30)", timeout=1)
    except Exception as e:  # the SDK raises its own timeout: the cell is interrupted server-side
        check("a cell past the SDK's timeout raises", "timed out" in str(e).lower(), e)
        after = sandbox.run_code("kept")
        check("the interrupted context keeps its state", after.text == "'yes'", after)
    else:
        raise AssertionError(f"the slow cell returned: {slow}")
    finally:
        sandbox.kill()


def contexts():
    sandbox = Sandbox.create()
    try:
        a = sandbox.create_code_context()
        b = sandbox.create_code_context(cwd="/tmp")
        check("a context has an id, language and cwd", a.id and a.language == "python" and b.cwd == "/tmp", (a.id, a.language, b.cwd))
        sandbox.run_code("name = 'a'", context=a)
        missing = sandbox.run_code("name", context=b)
        check("two contexts do not share names", missing.error is not None and missing.error.name == "NameError", missing)
        check("a context has its own cwd", sandbox.run_code("import os; os.getcwd()", context=b).text == "'/tmp'")
        default = sandbox.run_code("name")
        check("the default context is another one", default.error is not None, default)
        ids = {c.id for c in sandbox.list_code_contexts()}
        check("list_code_contexts lists them", {a.id, b.id} <= ids, ids)
        sandbox.restart_code_context(a)
        cleared = sandbox.run_code("'name' in globals()", context=a)
        check("restart clears a context", cleared.text == "False", cleared.text)
        sandbox.remove_code_context(b)
        ids = {c.id for c in sandbox.list_code_contexts()}
        check("remove_code_context removes it", b.id not in ids, ids)
    finally:
        sandbox.kill()


def streaming():
    sandbox = Sandbox.create()
    try:
        out, err, results, errors_seen = [], [], [], []
        execution = sandbox.run_code(
            "import sys\nfor i in range(3):\n    print(i)\nprint('oops', file=sys.stderr)\ndisplay(7)\n'end'",
            on_stdout=out.append,
            on_stderr=err.append,
            on_result=results.append,
            on_error=errors_seen.append,
        )
        check("on_stdout gets each line", "".join(m.line for m in out) == "0\n1\n2\n", out)
        check("stdout timestamps are integers", all(isinstance(m.timestamp, int) for m in out), out)
        check("on_stderr", [m.line for m in err] == ["oops\n"], err)
        check("on_result gets display and the main result", [r.text for r in results] == ["7", "'end'"], results)
        check("only the last is the main result", [r.is_main_result for r in results] == [False, True])
        check("no error", errors_seen == [] and execution.error is None)
        sandbox.run_code("1/0", on_error=errors_seen.append)
        check("on_error", errors_seen and errors_seen[0].name == "ZeroDivisionError", errors_seen)
    finally:
        sandbox.kill()


def charts():
    sandbox = Sandbox.create()
    try:
        plot = sandbox.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()")
        check("no error", plot.error is None, plot.error)
        pngs = [r.png for r in plot.results if r.png]
        check("plt.show() gives a PNG result", len(pngs) == 1, plot.results)
        check("it is a PNG", base64.b64decode(pngs[0]).startswith(b"\x89PNG"))
        html = sandbox.run_code("class H:\n    def _repr_html_(self): return '<i>x</i>'\nH()")
        check("an HTML representation", html.results[0].html == "<i>x</i>", html.results)
    finally:
        sandbox.kill()


def languages():
    sandbox = Sandbox.create()
    try:
        js = sandbox.create_code_context(language="javascript")
        sandbox.run_code("let n = 40", context=js)
        check("javascript keeps let across cells", sandbox.run_code("n + 2", context=js).text == "42")
        check("javascript by language", sandbox.run_code("const m = 1; m", language="javascript").text == "1")
        sandbox.run_code("X=5; cd /tmp", language="bash")
        out = sandbox.run_code("echo $X $(pwd)", language="bash")
        check("bash keeps variables and cd", out.logs.stdout == ["5 /tmp\n"], out.logs)
    finally:
        sandbox.kill()


def bench():
    """A trivial cell in an existing context through the SDK: one line `bench-cell-ms <JSON
    list>` of each cell's wall time in ms, for the test to summarize."""
    sandbox = Sandbox.create()
    try:
        sandbox.run_code("x = 0")
        times = []
        for _ in range(200):
            start = time.perf_counter()
            sandbox.run_code("x += 1")
            times.append((time.perf_counter() - start) * 1000)
        print("bench-cell-ms " + json.dumps(times))
    finally:
        sandbox.kill()


FLOWS = {f.__name__: f for f in (statefulness, errors, contexts, streaming, charts, languages, bench)}

if __name__ == "__main__":
    flow = sys.argv[1]
    FLOWS[flow]()
    print(f"flow {flow}: all checks passed")
