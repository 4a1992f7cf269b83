"""The flows a user of E2B's Python SDK runs, against a CodeBeaker server.

Run as `python python_flows.py <flow>` with E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY set.
Each check prints `ok: <what>`; the first that fails raises, so the exit status is non-zero and
the traceback names it.
"""

import asyncio
import datetime
import io
import os
import sys
import time

from e2b import (
    AsyncSandbox,
    CommandExitException,
    FileNotFoundException,
    FileType,
    Sandbox,
    SandboxQuery,
    TimeoutException,
)
from e2b.exceptions import NotFoundException, SandboxException


def check(what, ok, got=None):
    if not ok:
        raise AssertionError(f"{what}: got {got!r}")
    print(f"ok: {what}", flush=True)


def commands():
    sandbox = Sandbox.create()
    try:
        result = sandbox.commands.run("echo hi; echo oops >&2")
        check("stdout", result.stdout == "hi\n", result.stdout)
        check("stderr", result.stderr == "oops\n", result.stderr)
        check("exit code 0", result.exit_code == 0, result.exit_code)

        try:
            sandbox.commands.run("echo partial; exit 3")
            check("a non-zero exit raises", False)
        except CommandExitException as e:
            check("CommandExitException carries the exit code", e.exit_code == 3, e.exit_code)
            check("CommandExitException carries stdout", e.stdout == "partial\n", e.stdout)

        seen = []
        sandbox.commands.run(
            "for i in 1 2 3; do echo line$i; done; echo err >&2",
            on_stdout=seen.append,
            on_stderr=lambda e: seen.append("stderr:" + e),
        )
        joined = "".join(s for s in seen if not s.startswith("stderr:"))
        check("on_stdout gets every line in order", joined == "line1\nline2\nline3\n", seen)
        check("on_stderr gets stderr", "stderr:err\n" in seen, seen)

        quoted = sandbox.commands.run("printf '%s' 'a \"b\" $c !@#%^&*()'")
        check("shell quoting reaches bash intact", quoted.stdout == 'a "b" $c !@#%^&*()', quoted.stdout)
        broken = sandbox.commands.run("head -c 9000 /dev/zero | tr '\\0' x; printf '\\xe2'")
        check(
            "invalid UTF-8 across chunks becomes one replacement character",
            broken.stdout == "x" * 9000 + "\ufffd",
            broken.stdout[-5:],
        )

        env = sandbox.commands.run("echo $GREETING", envs={"GREETING": "hello"})
        check("envs", env.stdout == "hello\n", env.stdout)

        sandbox.files.make_dir("work/dir")
        cwd = sandbox.commands.run("pwd", cwd="work/dir")
        check("cwd", cwd.stdout.strip().endswith("/work/dir"), cwd.stdout)

        started = time.monotonic()
        try:
            sandbox.commands.run("sleep 30", timeout=2)
            check("a command past its timeout raises", False)
        except TimeoutException:
            elapsed = time.monotonic() - started
            check("TimeoutException at the command's timeout", elapsed < 15, elapsed)
        after = sandbox.commands.run("echo after")
        check("the sandbox runs commands after a timeout", after.stdout == "after\n", after.stdout)

        handle = sandbox.commands.run("sleep 1; echo background", background=True)
        check("a background command has a pid", handle.pid > 0, handle.pid)
        listed = [p.pid for p in sandbox.commands.list()]
        check("commands.list shows it", handle.pid in listed, listed)
        waited = handle.wait()
        check("wait() returns its output", waited.stdout == "background\n", waited.stdout)
        check("kill() of a finished command is False", sandbox.commands.kill(handle.pid) is False)

        seen = []
        running = sandbox.commands.run(
            "echo started; sleep 30; echo never", background=True, on_stdout=seen.append
        )
        deadline = time.monotonic() + 10
        while running.pid not in [p.pid for p in sandbox.commands.list()] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        queued = sandbox.commands.run("echo queued; sleep 30", background=True)
        killed_at = time.monotonic()
        check("kill() of a command waiting for the box is True", queued.kill() is True)
        check("kill() of a running command is True", running.kill() is True)
        for name, handle, stdout in [("running", running, "started\n"), ("queued", queued, "")]:
            try:
                handle.wait()
                check(f"wait() of the killed {name} command raises", False)
            except CommandExitException as e:
                check(f"the killed {name} command's exit code is -1", e.exit_code == -1, e.exit_code)
                check(f"the killed {name} command's error says it was killed", e.error == "signal: killed", e.error)
                check(f"the killed {name} command kept its output until the kill", e.stdout == stdout, e.stdout)
        check("kill ends the commands at once", time.monotonic() - killed_at < 5, time.monotonic() - killed_at)
        check("a killed command is no longer listed", running.pid not in [p.pid for p in sandbox.commands.list()])
        check("kill() of a killed command is False", sandbox.commands.kill(running.pid) is False)
        next_at = time.monotonic()
        after = sandbox.commands.run("echo next")
        check("the sandbox runs the next command after a kill", after.stdout == "next\n", after.stdout)
        check("at once", time.monotonic() - next_at < 5, time.monotonic() - next_at)

        fed = sandbox.commands.run("cat", background=True, stdin=True)
        sandbox.commands.send_stdin(fed.pid, "first\n")
        time.sleep(0.3)
        check("cat goes on with its stdin open", fed.pid in [p.pid for p in sandbox.commands.list()])
        fed.send_stdin(b"second\n")
        sandbox.commands.close_stdin(fed.pid)
        waited = fed.wait()
        check("close_stdin ends cat, and wait() returns what it echoed", waited.stdout == "first\nsecond\n", waited.stdout)
        closed = sandbox.commands.run("cat; echo after", background=True)
        try:
            sandbox.commands.send_stdin(closed.pid, "ignored\n")
            check("send_stdin to a command started without stdin raises", False)
        except SandboxException as e:
            check("send_stdin to a command started without stdin says so", "without stdin" in str(e), str(e))
        check("a command without stdin reads it closed", closed.wait().stdout == "after\n")

        handle = sandbox.commands.run("sleep 1; echo followed", background=True)
        follower = sandbox.commands.connect(handle.pid)
        followed = follower.wait()
        check("connect follows a running command", followed.stdout == "followed\n", followed.stdout)
        check("its own handle sees the same", handle.wait().stdout == "followed\n")
        try:
            sandbox.commands.connect(999999).wait()
            check("connect to an unknown pid raises", False)
        except NotFoundException as e:
            check("connect to an unknown pid is not found", "999999" in str(e), str(e))
    finally:
        sandbox.kill()


def files():
    sandbox = Sandbox.create()
    try:
        info = sandbox.files.write("notes/a.txt", "some text")
        check("write answers with the path", info.path.endswith("notes/a.txt"), info.path)
        check("read text", sandbox.files.read("notes/a.txt") == "some text")
        sandbox.files.write("blob.bin", b"\x00\x01\xfe\xff")
        data = sandbox.files.read("blob.bin", format="bytes")
        check("read bytes", bytes(data) == b"\x00\x01\xfe\xff", data)
        sandbox.files.write("zipped.txt", "compressed " * 100, gzip=True)
        check("gzip upload", sandbox.files.read("zipped.txt") == "compressed " * 100)
        check("gzip download", sandbox.files.read("zipped.txt", gzip=True) == "compressed " * 100)
        sandbox.files.write("streamed.bin", io.BytesIO(b"from a file object"))
        check("file-object upload", sandbox.files.read("streamed.bin") == "from a file object")
        sandbox.files.remove("zipped.txt")
        sandbox.files.remove("streamed.bin")
        names = sorted(e.name for e in sandbox.files.list("."))
        check("list", names == ["blob.bin", "notes"], names)
        deep = sorted(e.name for e in sandbox.files.list(".", depth=2))
        check("list with depth", "a.txt" in deep, deep)
        pwd = sandbox.commands.run("pwd").stdout.strip()
        info = sandbox.files.get_info("notes/a.txt")
        check("get_info of a file", (info.name, info.type, info.size) == ("a.txt", FileType.FILE, 9), info)
        check("get_info's path is where commands see it", info.path == f"{pwd}/notes/a.txt", info.path)
        check("get_info of a directory", sandbox.files.get_info("notes").type == FileType.DIR)
        try:
            sandbox.files.get_info("notes/none.txt")
            check("get_info of a missing file raises", False)
        except NotFoundException:
            check("get_info of a missing file raises NotFoundException", True)
        check("exists", sandbox.files.exists("notes/a.txt") is True)
        check("exists (missing)", sandbox.files.exists("notes/none.txt") is False)
        check("make_dir", sandbox.files.make_dir("made/deep") is True)
        check("make_dir (exists) is False", sandbox.files.make_dir("made/deep") is False)
        entry = sandbox.files.rename("notes/a.txt", "notes/b.txt")
        check("rename", entry.name == "b.txt", entry)
        check("renamed away", sandbox.files.exists("notes/a.txt") is False)
        check("renamed to", sandbox.files.read("notes/b.txt") == "some text")
        sandbox.files.remove("notes")
        check("remove", sandbox.files.exists("notes") is False)
        try:
            sandbox.files.read("missing.txt")
            check("reading a missing file raises", False)
        except NotFoundException as e:
            check("reading a missing file raises NotFoundException", "missing.txt" in str(e), str(e))
        seen = sandbox.commands.run("cat blob.bin | od -An -tx1").stdout.split()
        check("files and commands see one workspace", seen == ["00", "01", "fe", "ff"], seen)
    finally:
        sandbox.kill()


def lifecycle():
    sandbox = Sandbox.create(metadata={"flow": "lifecycle"}, envs={"SANDBOX_VAR": "kept"})
    check("envVars reach commands", sandbox.commands.run("echo $SANDBOX_VAR").stdout == "kept\n")
    info = sandbox.get_info()
    check("get_info", info.sandbox_id == sandbox.sandbox_id and info.template_id == "base", info)
    check("metadata is kept", info.metadata == {"flow": "lifecycle"}, info.metadata)
    check("cpu and memory are reported", info.cpu_count >= 1 and info.memory_mb > 0, info)
    listed = Sandbox.list(query=None).next_items()
    check("Sandbox.list has it", sandbox.sandbox_id in [s.sandbox_id for s in listed], listed)
    sandbox.set_timeout(120)
    extended = sandbox.get_info().end_at
    check("set_timeout moves endAt", (extended - info.started_at).total_seconds() >= 110, extended)
    again = Sandbox.connect(sandbox.sandbox_id)
    check("connect", again.commands.run("echo again").stdout == "again\n")
    check("is_running", sandbox.is_running() is True)
    check("kill", sandbox.kill() is True)
    check("is_running after kill", sandbox.is_running() is False)
    check("kill again is False", Sandbox.kill(sandbox.sandbox_id) is False)
    try:
        sandbox.commands.run("echo late")
        check("a command on a killed sandbox raises", False)
    except SandboxException as e:
        check("a command on a killed sandbox says it is gone", "was not found" in str(e), str(e))
    try:
        sandbox.files.read("anything")
        check("a read on a killed sandbox raises", False)
    except SandboxException as e:
        check("a read on a killed sandbox says it is gone", "was not found" in str(e), str(e))
    try:
        Sandbox.get_info(sandbox.sandbox_id)
        check("get_info of a killed sandbox raises", False)
    except Exception as e:
        check("get_info of a killed sandbox is not found", "not found" in str(e), str(e))

    busy = Sandbox.create()
    running = busy.commands.run("sleep 30", background=True)
    started = time.monotonic()
    check("kill of a sandbox running a command", busy.kill() is True)
    check("kill does not wait for the command", time.monotonic() - started < 10)
    check("the busy sandbox is gone at once", busy.is_running() is False)
    try:
        running.wait()
        check("waiting on a killed sandbox's command raises", False)
    except SandboxException as e:
        check("the command's wait says the sandbox was killed", "killed" in str(e), str(e))
        check("and says so soon", time.monotonic() - started < 10)

    short = Sandbox.create(timeout=2)
    shortened = Sandbox.create(timeout=60)
    shortened.set_timeout(2)
    time.sleep(4)
    check("a sandbox ends at its timeout", short.is_running() is False)
    check("a shortened timeout ends it too", shortened.is_running() is False)


def isolation():
    first = Sandbox.create()
    second = Sandbox.create()
    try:
        first.files.write("secret.txt", "first's")
        check("the other sandbox does not see the file", second.files.exists("secret.txt") is False)
        first.commands.run("echo mine > /tmp/mark")
        seen = second.commands.run("cat /tmp/mark 2>/dev/null || echo none").stdout
        check("the other sandbox has its own /tmp", seen == "none\n", seen)
        check("ids differ", first.sandbox_id != second.sandbox_id)
    finally:
        first.kill()
        second.kill()
    check("killing one left none behind", second.is_running() is False)


def asynchronous():
    async def flow():
        sandbox = await AsyncSandbox.create()
        try:
            result = await sandbox.commands.run("echo hi")
            check("async run", result.stdout == "hi\n", result.stdout)
            await sandbox.files.write("a.txt", "async text")
            check("async read", await sandbox.files.read("a.txt") == "async text")
            check("async exists", await sandbox.files.exists("a.txt") is True)
            check("async is_running", await sandbox.is_running() is True)
        finally:
            await sandbox.kill()
        check("async is_running after kill", await sandbox.is_running() is False)

    asyncio.run(flow())


def sdk_cases():
    """The calls of a subset of the SDK's own test suite (`packages/python-sdk/tests/sync` in
    e2b-dev/E2B: `sandbox_sync/commands/`, `sandbox_sync/files/` and the sandbox cases), each
    check named after the case it covers. E2B's home is `/home/user`; ours is the workspace, so
    paths are checked against `pwd` instead."""
    sandbox = Sandbox.create(envs={"FOO": "from the sandbox"})
    try:
        home = sandbox.commands.run("pwd").stdout.strip()

        # commands/test_run.py
        for name, text in [("plain", "Hello, World!"), ("special characters", "!@#$%^&*()_+"),
                           ("multiline", "Hello,\nWorld!")]:
            cmd = sandbox.commands.run(f'echo "{text}"')
            check(f"test_run ({name})", (cmd.exit_code, cmd.stdout) == (0, text + "\n"), cmd.stdout)
        broken = sandbox.commands.run('printf "' + "a" * 8191 + '\\xe2"')
        check("test_run_with_broken_utf8", broken.stdout == "a" * 8191 + "\ufffd", broken.stdout[-3:])
        check("test_run_with_timeout", sandbox.commands.run("echo in time", timeout=10).exit_code == 0)
        try:
            sandbox.commands.run("sleep 10", timeout=2)
            check("test_run_with_too_short_timeout", False)
        except TimeoutException:
            check("test_run_with_too_short_timeout", True)
        iterated = sandbox.commands.run("sleep 10", timeout=2, background=True)
        try:
            for _ in iterated:
                pass
            check("test_run_with_too_short_timeout_iterating", False)
        except TimeoutException:
            check("test_run_with_too_short_timeout_iterating", True)

        # commands/test_env_vars.py
        own = sandbox.commands.run("echo $FOO", envs={"FOO": "bar"}).stdout.strip()
        check("test_command_envs", own == "bar", own)
        kept = sandbox.commands.run("echo $FOO").stdout.strip()
        check("test_sandbox_envs", kept == "from the sandbox", kept)

        # commands/test_cmd_kill.py (the pid is the door's, not a process id in the box, so the
        # kill is checked through commands.list rather than `kill -0`)
        sleeping = sandbox.commands.run("sleep 10", background=True)
        check("test_kill_process", sandbox.commands.kill(sleeping.pid) is True)
        deadline = time.monotonic() + 5
        while sleeping.pid in [p.pid for p in sandbox.commands.list()] and time.monotonic() < deadline:
            time.sleep(0.05)
        listed = [p.pid for p in sandbox.commands.list()]
        check("test_kill_process (gone from the list at once)", sleeping.pid not in listed, listed)
        check("test_kill_non_existing_process", sandbox.commands.kill(999999) is False)

        # commands/test_send_stdin.py
        for name, text in [("text", "Hello, World!"), ("special characters", "!@#$%^&*()_+"),
                           ("multiline", "Hello,\nWorld!")]:
            cat = sandbox.commands.run("cat", background=True, stdin=True)
            sandbox.commands.send_stdin(cat.pid, text)
            echoed = ""
            for stdout, _, _ in cat:
                echoed += stdout or ""
                if len(echoed) >= len(text):
                    break
            check(f"test_send_stdin ({name})", echoed == text, echoed)
            cat.kill()

        # files/test_write.py
        check("test_write_file (no files)", sandbox.files.write_files([]) == [])
        one = sandbox.files.write_files([{"path": "one_test_file.txt", "data": "This is a test file."}])
        check("test_write_file (one file)", len(one) == 1 and one[0].path == f"{home}/one_test_file.txt", one)
        check("test_write_file (it exists)", sandbox.files.exists(one[0].path) is True)
        check("test_write_file (its content)", sandbox.files.read(one[0].path) == "This is a test file.")
        many = [{"path": f"test_write_{i}.txt", "data": f"This is a test file {i}."} for i in range(10)]
        infos = sandbox.files.write_files(many)
        check("test_write_file (ten files)", [i.path for i in infos] == [f"{home}/{f['path']}" for f in many], infos)
        contents = [sandbox.files.read(i.path) for i in infos]
        check("test_write_file (their contents)", contents == [f["data"] for f in many], contents)
        sandbox.files.write_files([{"path": "test_overwrite.txt", "data": "Initial content."}])
        sandbox.files.write_files([{"path": "test_overwrite.txt", "data": "New content."}])
        check("test_overwrite_file", sandbox.files.read("test_overwrite.txt") == "New content.")
        sandbox.files.write_files([{"path": "non_existing_dir/test_write.txt", "data": "This should succeed too."}])
        check("test_write_to_non_existing_directory",
              sandbox.files.read("non_existing_dir/test_write.txt") == "This should succeed too.")

        # files/test_read.py
        sandbox.files.write("test_read.txt", "Hello, world!")
        check("test_read_file", sandbox.files.read("test_read.txt") == "Hello, world!")
        for exception in (FileNotFoundException, NotFoundException):
            try:
                sandbox.files.read("non_existing_file.txt")
                check(f"test_read_non_existing_file ({exception.__name__})", False)
            except exception:
                check(f"test_read_non_existing_file ({exception.__name__})", True)
        sandbox.commands.run("touch empty_file.txt")
        check("test_read_empty_file", sandbox.files.read("empty_file.txt") == "")
        streamed = "Streamed read content. " * 10_000
        sandbox.files.write("test_read_stream.txt", streamed)
        for gzip in (False, True):
            got = b"".join(sandbox.files.read("test_read_stream.txt", format="stream", gzip=gzip)).decode()
            check(f"test_read_file_as_stream (gzip={gzip})", got == streamed, len(got))
        try:
            b"".join(sandbox.files.read("non_existing_file.txt", format="stream"))
            check("test_read_non_existing_file_as_stream", False)
        except FileNotFoundException:
            check("test_read_non_existing_file_as_stream", True)

        # files/test_exists.py, test_make_dir.py, test_remove.py, test_rename.py
        sandbox.files.write_files([{"path": "test_exists.txt", "data": "test"}])
        check("test_exists", sandbox.files.exists("test_exists.txt") is True)
        check("test_make_directory", sandbox.files.make_dir("test_directory") is True
              and sandbox.files.exists("test_directory") is True)
        check("test_make_directory_already_exists", sandbox.files.make_dir("test_directory") is False)
        sandbox.files.make_dir("test_directory/nested_directory")
        check("test_make_nested_directory", sandbox.files.exists("test_directory/nested_directory") is True)
        sandbox.files.write("test_remove.txt", "This file will be removed.")
        sandbox.files.remove("test_remove.txt")
        check("test_remove_file", sandbox.files.exists("test_remove.txt") is False)
        sandbox.files.remove("non_existing_file.txt")
        check("test_remove_non_existing_file (no error)", True)
        sandbox.files.write_files([{"path": "test_rename_old.txt", "data": "This file will be renamed."}])
        renamed = sandbox.files.rename("test_rename_old.txt", "test_rename_new.txt")
        check("test_rename_file", renamed.path == f"{home}/test_rename_new.txt", renamed.path)
        check("test_rename_file (old gone, new there)", not sandbox.files.exists("test_rename_old.txt")
              and sandbox.files.read("test_rename_new.txt") == "This file will be renamed.")
        try:
            sandbox.files.rename("non_existing_file.txt", "new_non_existing_file.txt")
            check("test_rename_non_existing_file", False)
        except NotFoundException:
            check("test_rename_non_existing_file", True)

        # files/test_files_list.py
        parent = "test_directory_list"
        for sub in ["subdir1/subdir1_1", "subdir1/subdir1_2", "subdir2/subdir2_1", "subdir2/subdir2_2"]:
            sandbox.files.make_dir(f"{parent}/{sub}")
        sandbox.files.write(f"{parent}/file1.txt", "Hello, world!")
        shallow = ["file1.txt", "subdir1", "subdir2"]
        deep = ["file1.txt", "subdir1", "subdir1/subdir1_1", "subdir1/subdir1_2", "subdir2",
                "subdir2/subdir2_1", "subdir2/subdir2_2"]
        for depth, expected in [(None, shallow), (1, shallow), (2, deep), (3, deep)]:
            entries = sandbox.files.list(parent) if depth is None else sandbox.files.list(parent, depth=depth)
            paths = [e.path for e in entries]
            check(f"test_list_directory (depth {depth})", paths == [f"{home}/{parent}/{p}" for p in expected], paths)
            names = [e.name for e in entries]
            check(f"test_list_directory (depth {depth}, names)", names == [p.split("/")[-1] for p in expected], names)
            types = [e.type for e in entries]
            check(f"test_list_directory (depth {depth}, types)",
                  types == [FileType.FILE] + [FileType.DIR] * (len(expected) - 1), types)
        try:
            sandbox.files.list(parent, depth=-1)
            check("test_list_directory_error_cases", False)
        except Exception as e:
            check("test_list_directory_error_cases", "depth should be at least 1" in str(e), str(e))

        # files/test_info.py (mode, permissions, owner and group are not reported: see docs/e2b.md)
        sandbox.files.write("test_file.txt", "test")
        info = sandbox.files.get_info("test_file.txt")
        check("test_get_info_of_file", (info.name, info.type, info.path, info.size)
              == ("test_file.txt", FileType.FILE, f"{home}/test_file.txt", 4), info)
        check("test_get_info_of_file (modified time)", info.modified_time is not None)
        sandbox.files.make_dir("test_dir")
        info = sandbox.files.get_info("test_dir")
        check("test_get_info_of_directory", (info.name, info.type, info.path)
              == ("test_dir", FileType.DIR, f"{home}/test_dir"), info)
        for name in ("test_does_not_exist.txt", "test_does_not_exist_dir"):
            try:
                sandbox.files.get_info(name)
                check(f"test_get_info_of_nonexistent ({name})", False)
            except NotFoundException:
                check(f"test_get_info_of_nonexistent ({name})", True)
    finally:
        sandbox.kill()

    # sandbox_sync/test_create.py, test_timeout.py, test_kill.py,
    # commands/test_sandbox_killed_during_run.py
    tagged = Sandbox.create(timeout=5, metadata={"test-key": "test-value"})
    check("test_start", tagged.is_running() is True and tagged._envd_version is not None)
    found = Sandbox.list(query=SandboxQuery(metadata={"test-key": "test-value"})).next_items()
    mine = [s for s in found if s.sandbox_id == tagged.sandbox_id]
    check("test_metadata", len(mine) == 1 and mine[0].metadata == {"test-key": "test-value"}, found)
    check("test_get_timeout", isinstance(tagged.get_info().started_at, datetime.datetime))
    tagged.set_timeout(5)
    time.sleep(1)
    tagged.set_timeout(10)
    time.sleep(6)
    check("test_shorten_then_lengthen_timeout", tagged.is_running() is True)
    tagged.kill()
    listed = [s.sandbox_id for s in Sandbox.list().next_items()]
    check("test_kill", tagged.sandbox_id not in listed, listed)
    shortened = Sandbox.create()
    shortened.set_timeout(5)
    time.sleep(6)
    check("test_shorten_timeout", shortened.is_running(request_timeout=5) is False)
    busy = Sandbox.create()
    cmd = busy.commands.run("sleep 60", background=True)
    busy.kill()
    try:
        cmd.wait()
        check("test_kill_sandbox_while_command_is_running", False)
    except SandboxException as e:
        check("test_kill_sandbox_while_command_is_running", "was killed" in str(e), str(e))


FLOWS = {
    "async": asynchronous,
    "commands": commands,
    "files": files,
    "lifecycle": lifecycle,
    "sdk_cases": sdk_cases,
    "isolation": isolation,
}

if __name__ == "__main__":
    FLOWS[sys.argv[1]]()
    print(f"flow {sys.argv[1]}: all checks passed", flush=True)
    # Every check has run (a failed one raised above). The SDK's HTTP transport is a native
    # extension whose runtime threads live to the end of the interpreter, and the interpreter's
    # finalization racing them has been seen to abort the process under load; end without it.
    os._exit(0)
