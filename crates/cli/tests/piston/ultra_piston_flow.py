"""ultra-piston (the published Python client of Piston), unchanged, against `codebeaker serve`.

Usage: ultra_piston_flow.py BASE_URL [API_KEY]; prints "ultra-piston flow: all checks passed".
"""

import asyncio
import sys

from ultra_piston import File, PistonClient
from ultra_piston.errors import BadRequestError

base_url = sys.argv[1]
api_key = sys.argv[2] if len(sys.argv) > 2 else None
# The client waits this long between requests; none is needed here.
client = PistonClient(base_url=base_url, api_key=api_key, rate_limit=0)

runtimes = client.get_runtimes()
by_language = {r.language: r for r in runtimes}
assert "python" in by_language, runtimes
python = by_language["python"]
assert python.version.count(".") == 2, python
assert "py" in python.aliases, python
assert "c++" in by_language and "cpp" in by_language["c++"].aliases, runtimes

out = client.post_execute(
    language="python",
    version=python.version.rsplit(".", 1)[0],  # a range: MAJOR.MINOR
    file=File(name="hello.py", content="import sys\nprint('hello', sys.argv[1:], input())\n"),
    stdin="piston",
    args=["a", "b"],
)
assert out.language == "python" and out.version == python.version, out
assert out.run.code == 0 and out.run.signal is None, out
assert out.run.stdout == "hello ['a', 'b'] piston\n", out
assert out.run.output == out.run.stdout and out.run.stderr == "", out
assert out.compile is None, out

failing = client.post_execute(
    language="py",
    version="*",
    file=File(content="import sys\nprint('oops', file=sys.stderr)\nsys.exit(3)\n"),
)
assert failing.run.code == 3 and failing.run.stderr == "oops\n", failing

compiled = client.post_execute(
    language="c",
    version="*",
    file=File(name="main.c", content='#include <stdio.h>\nint main(void) { puts("hi from c"); return 0; }\n'),
)
assert compiled.compile is not None and compiled.compile.code == 0, compiled
assert compiled.run.stdout == "hi from c\n" and compiled.run.code == 0, compiled

try:
    client.post_execute(language="cobol", version="*", file=File(content="x"))
    raise AssertionError("an unknown language must be refused")
except BadRequestError:
    pass


async def asynchronous():
    out = await client.post_execute_async(
        language="python3", version="3", file=File(content="print(6 * 7)")
    )
    assert out.run.stdout == "42\n", out


asyncio.run(asynchronous())
print("ultra-piston flow: all checks passed")
