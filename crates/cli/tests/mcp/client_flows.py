"""Drives CodeBeaker's MCP server with the official MCP Python SDK, for crates/cli/tests/mcp.rs.

`python client_flows.py stdio BINARY FLOW` starts `BINARY mcp` and speaks over its stdin and
stdout; `python client_flows.py http URL TOKEN FLOW` speaks MCP's streamable HTTP transport to URL
with `Authorization: Bearer TOKEN` (`-` for none). Each flow checks every answer and ends by
printing `flow FLOW: all checks passed`. The flows `lifecycle` and `idle` talk to the test on
their own stdin and stdout too: they print `open <sandbox_id> <server pid>` while the sandbox is
open and wait for a line before going on. `bench N` prints one JSON object of timings.
"""

import asyncio
import json
import os
import sys
import time

import httpx2
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

TOOLS = {
    "run_code": {"language", "code"},
    "sandbox_create": set(),
    "sandbox_run_code": {"sandbox_id", "code"},
    "sandbox_shell": {"sandbox_id", "command"},
    "sandbox_write_file": {"sandbox_id", "path", "content"},
    "sandbox_read_file": {"sandbox_id", "path"},
    "sandbox_list_dir": {"sandbox_id"},
    "sandbox_close": {"sandbox_id"},
}

# A 1x1 PNG, shown by an object's _repr_png_.
PNG_CELL = """
import base64
class Dot:
    def _repr_png_(self):
        return base64.b64decode(
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
        )
Dot()
"""


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def text_of(result):
    return "".join(block.text for block in result.content if block.type == "text")


def transport():
    kind, target = sys.argv[1], sys.argv[2]
    if kind == "stdio":
        params = StdioServerParameters(
            command=target,
            args=["mcp", "--log", "warn"],
            # The bound of the test's HTTP server (2), through the configuration's environment.
            env={
                "CODEBEAKER_SANDBOX__ALLOW_DEGRADED": "false",
                "CODEBEAKER_MCP__MAX_SANDBOXES_PER_CLIENT": "2",
            },
        )
        return stdio_client(params)
    token = sys.argv[3]
    headers = {} if token == "-" else {"Authorization": f"Bearer {token}"}
    client = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300))
    return streamable_http_client(target, http_client=client)


async def call(session, tool, **arguments):
    return await session.call_tool(tool, arguments)


async def ok(session, tool, **arguments):
    result = await call(session, tool, **arguments)
    check(not result.is_error, f"{tool} {arguments}: {text_of(result)}")
    return text_of(result)


async def failed(session, tool, **arguments):
    result = await call(session, tool, **arguments)
    check(result.is_error, f"{tool} {arguments} should fail: {text_of(result)}")
    return text_of(result)


async def create(session, language=None):
    arguments = {} if language is None else {"language": language}
    text = await ok(session, "sandbox_create", **arguments)
    first = text.splitlines()[0]
    check(first.startswith("sandbox_id: "), text)
    return first.removeprefix("sandbox_id: ").strip()


def server_pid():
    """The pid of the `codebeaker mcp` this process started, or `-` over HTTP."""
    if sys.argv[1] != "stdio":
        return "-"
    me = os.getpid()
    for tid in os.listdir(f"/proc/{me}/task"):
        with open(f"/proc/{me}/task/{tid}/children") as f:
            for pid in f.read().split():
                with open(f"/proc/{pid}/cmdline", "rb") as c:
                    if b"mcp" in c.read().split(b"\0"):
                        return pid
    raise AssertionError("no codebeaker mcp child")


async def flow_tools(session, init):
    check(init.server_info.name == "codebeaker", init)
    check(init.capabilities.tools is not None, init)
    check(init.capabilities.resources is not None, init)
    check(init.instructions and "sandbox_create" in init.instructions, init)
    listed = (await session.list_tools()).tools
    names = {tool.name: tool for tool in listed}
    check(set(names) == set(TOOLS), sorted(names))
    for name, required in TOOLS.items():
        tool = names[name]
        schema = tool.model_dump(by_alias=True, exclude_none=True)["inputSchema"]
        check(schema["type"] == "object", schema)
        check(set(schema.get("required", [])) == required, (name, schema))
        check(tool.description and len(tool.description) > 40, tool)
        for field, spec in schema["properties"].items():
            check(spec.get("description"), (name, field))
    run_code = names["run_code"].model_dump(by_alias=True, exclude_none=True)["inputSchema"]
    check(run_code["properties"]["timeout_ms"]["type"] == "integer", run_code)
    try:
        await call(session, "no_such_tool")
        raise AssertionError("an unknown tool is a protocol error")
    except MCPError as error:
        check("run_code" in error.message, error.message)
    try:
        await call(session, "run_code", language="python")
        raise AssertionError("missing code is a protocol error")
    except MCPError as error:
        check("code" in error.message, error.message)


async def flow_run(session, init):
    programs = {
        "python": ("import sys\nprint('hello from', sys.version_info[0])", "hello from 3"),
        "javascript": ("console.log('hello from node', 6 * 7)", "hello from node 42"),
        "bash": ("echo \"hello from bash $((6 * 7))\"", "hello from bash 42"),
        "go": (
            'package main\nimport "fmt"\nfunc main() { fmt.Println("hello from go", 6*7) }\n',
            "hello from go 42",
        ),
    }
    for language, (code, expected) in programs.items():
        text = await ok(session, "run_code", language=language, code=code)
        check("status: ok, exit code 0" in text, text)
        check(expected in text, (language, text))
    text = await ok(session, "run_code", language="py", code="print(input()[::-1])", stdin="olleh\n")
    check("hello" in text, text)
    # A program that writes more than a result keeps is cut, with a note.
    text = await ok(session, "run_code", language="python", code="print('x' * 100000)")
    check("more bytes not shown" in text and len(text) < 40000, len(text))


async def flow_errors(session, init):
    text = await failed(session, "run_code", language="python", code="def broken(:\n    pass\n")
    check("SyntaxError" in text and "status: compile_error" in text and "fix the errors" in text, text)
    started = time.monotonic()
    text = await failed(session, "run_code", language="python", code="while True:\n    pass\n", timeout_ms=1000)
    check("status: timeout" in text and "timeout_ms" in text, text)
    check(time.monotonic() - started < 30, "the timeout held")
    text = await failed(session, "run_code", language="cobol-2099", code="x")
    check("not supported" in text and "python" in text, text)
    text = await failed(session, "run_code", language="python", code="import sys\nsys.exit(3)")
    check("exit code 3" in text, text)


async def flow_sandbox(session, init):
    sandbox = await create(session)
    text = await ok(session, "sandbox_run_code", sandbox_id=sandbox, code="x = 41")
    text = await ok(session, "sandbox_run_code", sandbox_id=sandbox, code="x + 1")
    check("--- result\n42" in text, text)
    text = await ok(session, "sandbox_run_code", sandbox_id=sandbox, code="print('out', x)\nx * 2")
    check("out 41" in text and "82" in text, text)
    text = await failed(session, "sandbox_run_code", sandbox_id=sandbox, code="1 / 0")
    check("ZeroDivisionError" in text, text)
    text = await ok(session, "sandbox_run_code", sandbox_id=sandbox, code="x")
    check("41" in text, "state survives an exception: " + text)
    result = await call(session, "sandbox_run_code", sandbox_id=sandbox, code=PNG_CELL)
    check(not result.is_error, text_of(result))
    images = [block for block in result.content if block.type == "image"]
    check(len(images) == 1 and images[0].mime_type == "image/png", result.content)
    check(images[0].data.startswith("iVBOR"), images[0].data[:20])
    # Another language's context in the same sandbox, made on first use.
    text = await ok(session, "sandbox_run_code", sandbox_id=sandbox, code="let y = 20; y + 22", language="javascript")
    check("42" in text, text)

    await ok(session, "sandbox_write_file", sandbox_id=sandbox, path="notes/today.txt", content="hello sandbox\n")
    text = await ok(session, "sandbox_shell", sandbox_id=sandbox, command="cat notes/today.txt && echo done >&2")
    check("--- stdout\nhello sandbox" in text and "--- stderr\ndone" in text, text)
    text = await failed(session, "sandbox_shell", sandbox_id=sandbox, command="exit 7")
    check("exit code 7" in text, text)
    text = await ok(session, "sandbox_read_file", sandbox_id=sandbox, path="notes/today.txt")
    check(text == "hello sandbox\n", repr(text))
    text = await ok(session, "sandbox_list_dir", sandbox_id=sandbox)
    check("notes/" in text.splitlines(), text)
    text = await ok(session, "sandbox_list_dir", sandbox_id=sandbox, path="notes")
    check("today.txt (14 bytes)" in text.splitlines(), text)
    text = await failed(session, "sandbox_read_file", sandbox_id=sandbox, path="missing.txt")
    check("missing.txt" in text, text)
    # The cell's code and the shell share the workspace.
    await ok(session, "sandbox_run_code", sandbox_id=sandbox, code="open('from_cell.txt', 'w').write('cell')")
    text = await ok(session, "sandbox_shell", sandbox_id=sandbox, command="cat from_cell.txt")
    check("cell" in text, text)

    text = await ok(session, "sandbox_close", sandbox_id=sandbox)
    check("closed" in text, text)
    closed = await failed(session, "sandbox_run_code", sandbox_id=sandbox, code="x")
    check("unknown sandbox" in closed and "sandbox_create" in closed, closed)
    made_up = "00000000-0000-4000-8000-000000000000"
    unknown = await failed(session, "sandbox_shell", sandbox_id=made_up, command="true")
    check(unknown.replace(made_up, "ID") == closed.replace(sandbox, "ID"), (unknown, closed))
    await failed(session, "sandbox_close", sandbox_id=sandbox)

    # A language without contexts runs each cell as a program; its files persist.
    go = await create(session, "go")
    text = await ok(session, "sandbox_run_code", sandbox_id=go, code='package main\nimport "fmt"\nfunc main() { fmt.Println("go cell") }\n')
    check("go cell" in text, text)
    await ok(session, "sandbox_close", sandbox_id=go)


async def flow_resource(session, init):
    resources = (await session.list_resources()).resources
    check([str(r.uri) for r in resources] == ["codebeaker://languages"], resources)
    read = await session.read_resource("codebeaker://languages")
    body = json.loads(read.contents[0].text)
    languages = {entry["name"]: entry for entry in body["languages"]}
    python = languages["python"]
    check(python["available"] and python["version"], python)
    check(python["contexts"] is True and isinstance(python["warm"], bool), python)
    check(languages["go"]["contexts"] is False, languages["go"])
    try:
        await session.read_resource("codebeaker://nothing")
        raise AssertionError("an unknown resource is a protocol error")
    except MCPError as error:
        check("codebeaker://languages" in error.message, error.message)


async def flow_lifecycle(session, init):
    sandbox = await create(session)
    await ok(session, "sandbox_run_code", sandbox_id=sandbox, code="x = 1")
    print("open", sandbox, server_pid(), flush=True)
    sys.stdin.readline()


async def flow_idle(session, init):
    sandbox = await create(session)
    print("open", sandbox, server_pid(), flush=True)
    seconds = float(sys.stdin.readline())
    await asyncio.sleep(seconds)


async def flow_bound(session, init):
    """Up to the bound (the test's server holds 2 per client), then refused; a close makes room."""
    first = await create(session)
    await create(session)
    text = await failed(session, "sandbox_create")
    check("the most it may" in text and "sandbox_close" in text, text)
    await ok(session, "sandbox_close", sandbox_id=first)
    await create(session)


async def flow_victim(session, init):
    """Holds a sandbox with a secret while the test sends intruders; then checks it is intact."""
    sandbox = await create(session)
    await ok(session, "sandbox_run_code", sandbox_id=sandbox, code="secret = 'victim-secret'")
    await ok(session, "sandbox_write_file", sandbox_id=sandbox, path="secret.txt", content="victim-secret")
    print("open", sandbox, "-", flush=True)
    sys.stdin.readline()
    text = await ok(session, "sandbox_run_code", sandbox_id=sandbox, code="secret")
    check("victim-secret" in text, text)
    text = await ok(session, "sandbox_read_file", sandbox_id=sandbox, path="secret.txt")
    check(text == "victim-secret", text)
    text = await ok(session, "sandbox_list_dir", sandbox_id=sandbox)
    check("intruded.txt" not in text, text)


async def flow_intruder(session, init):
    """Every sandbox tool on another session's sandbox answers as for a made-up id."""
    victim = sys.argv[5]
    made_up = "00000000-0000-4000-8000-000000000000"
    attempts = {
        "sandbox_run_code": {"code": "secret"},
        "sandbox_read_file": {"path": "secret.txt"},
        "sandbox_shell": {"command": "cat secret.txt"},
        "sandbox_write_file": {"path": "intruded.txt", "content": "x"},
        "sandbox_list_dir": {},
        "sandbox_close": {},
    }
    for tool, arguments in attempts.items():
        theirs = await failed(session, tool, sandbox_id=victim, **arguments)
        unknown = await failed(session, tool, sandbox_id=made_up, **arguments)
        check("victim-secret" not in theirs, theirs)
        check(theirs.replace(victim, "ID") == unknown.replace(made_up, "ID"), (tool, theirs, unknown))
    # Its own sandbox works, and is not the victim's.
    mine = await create(session)
    text = await ok(session, "sandbox_shell", sandbox_id=mine, command="ls")
    check("secret.txt" not in text, text)


async def flow_flood(session, init):
    """Many creations at once: exactly the bound (2 on the test's server) succeed."""
    results = await asyncio.gather(*(call(session, "sandbox_create") for _ in range(6)))
    made = [r for r in results if not r.is_error]
    refused = [text_of(r) for r in results if r.is_error]
    check(len(made) == 2, [text_of(r) for r in results])
    check(all("the most it may" in text for text in refused), refused)


async def flow_bench(session, init):
    runs = int(sys.argv[5])
    code = "print('hi')"
    await ok(session, "run_code", language="python", code=code)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        text = await ok(session, "run_code", language="python", code=code)
        times.append((time.perf_counter() - started) * 1000)
        check("hi" in text, text)
    print(json.dumps({"run_ms": times}))
    return False


async def main():
    flow = sys.argv[4]
    run = globals()[f"flow_{flow}"]
    async with transport() as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            check(init.protocol_version == "2025-11-25", init.protocol_version)
            said = await run(session, init)
    if said is not False:
        print(f"flow {flow}: all checks passed", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        # `stdio BINARY FLOW [N]`: the same positions as `http URL TOKEN FLOW [N]` from FLOW on.
        sys.argv.insert(3, "-")
    asyncio.run(main())
