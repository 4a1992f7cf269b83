# CodeBeaker's warm worker for Python: one pre-started interpreter per box that runs each
# program in a fresh fork of itself, so a run never pays the interpreter's start-up and never
# sees what an earlier run left in memory.
#
# Protocol (the box's init is the other end of the SOCK_SEQPACKET socket on fd 3): a request is
# one JSON message {"argv": [...], "cwd": "...", "env": {...}, "rlimits": [[resource, soft,
# hard], ...]} with five descriptors attached (stdin, stdout, stderr, snippet input, snippet
# result). The worker forks; the child takes the descriptors as 0-4 and runs argv[-1] as
# __main__, exactly as `python3 -B argv[-1]` would. The worker answers {"pid": n} at once and
# {"exit": status, "cpu_ns": n, "maxrss": bytes} once it has reaped the child. Once, when it has
# finished starting, it sends {"ready": true}.
import builtins
import ctypes
import fcntl
import gc
import io
import json
import os
import resource
import socket
import sys
import traceback
import types

# What the snippet wrapper and most programs import, loaded once before any fork.
import collections, datetime, decimal, functools, itertools, math, random, re, string  # noqa: E401,F401

PR_SET_DUMPABLE = 4
_libc = ctypes.CDLL(None, use_errno=True)
# Programs run as the same uid: keep them out of this process's memory and descriptors.
_libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
sys.dont_write_bytecode = True

_ctl = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=3)


def _exit_code(e):
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except Exception:
        pass
    return 1


# Compiled programs by source, so that a program run again (the snippet runner always is) is not
# compiled again in every child. Bounded; large files are never kept.
_CODE_CACHE = {}
_CODE_CACHE_ENTRIES = 64
_CODE_CACHE_MAX_SOURCE = 64 * 1024


def _retarget(code, path):
    """The same code object, reporting `path` as its file (nested functions too)."""
    consts = tuple(_retarget(c, path) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.replace(co_filename=path, co_consts=consts)


def _compiled(path):
    """The program at `path`, compiled here in the worker from the cache, or None (the child
    then compiles it itself, so errors come out exactly as the interpreter reports them)."""
    try:
        with open(path, "rb") as f:
            source = f.read(_CODE_CACHE_MAX_SOURCE + 1)
        if len(source) > _CODE_CACHE_MAX_SOURCE:
            return None
        code = _CODE_CACHE.get(source)
        if code is None:
            code = compile(source, "<cached>", "exec")
            if len(_CODE_CACHE) >= _CODE_CACHE_ENTRIES:
                _CODE_CACHE.pop(next(iter(_CODE_CACHE)))
            _CODE_CACHE[source] = code
        return _retarget(code, path)
    except BaseException:  # noqa: BLE001 - any trouble: let the child compile it
        return None


def _child(req, fds, code):
    status = 1
    try:
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
        for target, fd in enumerate(high):
            os.dup2(fd, target)
        os.closerange(5, 65536)
        for res, soft, hard in req["rlimits"]:
            resource.setrlimit(res, (soft, hard))
        os.setsid()
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        # sys.stdin, sys.stdout and sys.stderr already wrap descriptors 0-2, which now are the
        # run's pipes; the worker never used them, so their buffers are empty. (The child stays
        # non-dumpable: its own /proc/self works, other processes cannot reach into it.)
        path = req["argv"][-1]
        sys.argv = [path]
        sys.path[0] = os.path.dirname(path)
        namespace = {"__name__": "__main__", "__file__": path, "__builtins__": builtins,
                     "__doc__": None, "__package__": None, "__spec__": None, "__loader__": None}
        try:
            if code is None:
                with open(path, "rb") as f:
                    source = f.read()
                code = compile(source, path, "exec")
            exec(code, namespace)
            status = 0
        except SystemExit as e:
            status = _exit_code(e)
        except BaseException as e:  # noqa: BLE001 - report like the interpreter does
            tb = e.__traceback__
            while tb is not None and tb.tb_frame.f_code.co_filename != path:
                tb = tb.tb_next
            traceback.print_exception(type(e), e, tb)
            status = 1
        # What the interpreter does at exit: wait for threads, run atexit handlers.
        try:
            if "threading" in sys.modules:
                sys.modules["threading"]._shutdown()
            import atexit
            atexit._run_exitfuncs()
        except BaseException:  # noqa: BLE001
            pass
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001
                pass
    finally:
        os._exit(status)


def _warm_up():
    """Touch the lazily initialised parts every run uses, once, before any fork."""
    import linecache  # noqa: F401
    exec(compile("import json, os, sys\nx = json.loads(json.dumps({'a': [1, 2.5]}))", "<warm>", "exec"), {})
    with open(__file__ if "__file__" in globals() else "/dev/null", encoding="utf-8") as f:
        f.read(0)
    io.TextIOWrapper(io.BufferedWriter(io.FileIO(os.dup(1), "w")), encoding="utf-8").close()


_warm_up()
gc.collect()
gc.freeze()
_ctl.send(b'{"ready": true}')
while True:
    try:
        msg, fds, _flags, _addr = socket.recv_fds(_ctl, 1 << 20, 5)
    except InterruptedError:
        continue
    if not msg:
        os._exit(0)
    request = json.loads(msg)
    program = _compiled(request["argv"][-1]) if request.get("argv") else None
    pid = os.fork()
    if pid == 0:
        _child(request, fds, program)
    for fd in fds:
        os.close(fd)
    _ctl.send(json.dumps({"pid": pid}).encode())
    _, wait_status, usage = os.wait4(pid, 0)
    cpu_ns = int((usage.ru_utime + usage.ru_stime) * 1e9)
    _ctl.send(json.dumps({"exit": wait_status, "cpu_ns": cpu_ns, "maxrss": usage.ru_maxrss * 1024}).encode())
