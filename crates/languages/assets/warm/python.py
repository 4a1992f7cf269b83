# CodeBeaker's warm worker for Python: one pre-started interpreter per box that runs each
# program in a fresh fork of itself, so a run never pays the interpreter's start-up and never
# sees what an earlier run left in memory.
#
# Protocol (the box's init is the other end of the SOCK_SEQPACKET socket on fd 3): a request is
# one JSON message {"argv": [...], "cwd": "...", "env": {...}, "rlimits": [[resource, soft,
# hard], ...], "uid": n, "gid": n} with five descriptors attached (stdin, stdout, stderr, snippet
# input, snippet result). The worker forks; the child takes the descriptors as 0-4, becomes the
# run's uid and gid with no capability left, and runs argv[-1] as __main__, exactly as
# `python3 -B argv[-1]` would. The worker answers {"pid": n} at once and {"exit": status,
# "cpu_ns": n, "maxrss": bytes} once it has reaped the child. Once, when it has finished
# starting, it sends {"ready": true}. The optional first argument is the source of CodeBeaker's
# snippet runner, compiled once here because every snippet runs it.
#
# What a run can reach of the worker is the worker's whole memory (a fork is a copy of it), so
# the worker keeps nothing of any run there: it never reads, parses or compiles a request or a
# program (the child does, in its own memory), and it zeroes each request's bytes once it has
# forked. In the child, the worker's own module namespace is emptied before the program starts
# and `sys.modules["__main__"]` is the program's own module, so neither the worker's frames
# (`sys._getframe().f_back`) nor `gc.get_objects()` lead back to anything but public code.
#
# The worker runs under a uid of its own (the init starts it so), keeping only CAP_SETUID and
# CAP_SETGID to hand each child to the run's uid; a run therefore cannot signal it, change its
# rlimits or priority, or read its memory through /proc. It reads nothing a run can write: `-s`
# keeps the user site-packages (under a HOME that runs write) out, and the current directory that
# `-c` puts first on sys.path is removed before anything is imported from it.
import sys

if sys.path and sys.path[0] == "":
    del sys.path[0]

import builtins
import ctypes
import fcntl
import gc
import io
import json
import os
import resource
import socket
import traceback
import types

# What the snippet wrapper and most programs import, loaded once before any fork.
import collections, datetime, decimal, functools, itertools, math, random, re, string  # noqa: E401,F401

PR_SET_DUMPABLE = 4
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SYS_OPENAT2 = 437
RESOLVE_NO_SYMLINKS = 0x04
AT_FDCWD = -100
MAX_REQUEST = 1 << 20
RUN_FDS = 5

_libc = ctypes.CDLL(None, use_errno=True)
# Keep the programs out of this process's memory and descriptors through /proc.
_libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
sys.dont_write_bytecode = True


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_CAP_V3 = 0x20080522

# Resolved here once, not in every child (a child pays for every first touch).
_capset, _capget, _prctl, _syscall = _libc.capset, _libc.capget, _libc.prctl, _libc.syscall
_capset.argtypes = _capget.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData * 2)]
_syscall.restype = ctypes.c_long
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_cap_header = _CapHeader(_CAP_V3, 0)
_no_caps = (_CapData * 2)()
_caps_left = (_CapData * 2)()
_how = _OpenHow(os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0, RESOLVE_NO_SYMLINKS)
_how_size = ctypes.c_size_t(ctypes.sizeof(_how))


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


# CodeBeaker's own programs, compiled once: source -> code. Never a run's source. Their frames
# name the file `main.py` (as the snippet runner's own tracebacks, which it never shows, would).
_OWN = {}
if len(sys.argv) > 1:
    _own_source = sys.argv[1].encode("utf-8")
    _OWN[_own_source] = compile(_own_source, "main.py", "exec")


def _become(uid, gid):
    """Takes the run's uid and gid and drops every capability (the worker keeps CAP_SETUID and
    CAP_SETGID, which a uid change between two non-root uids would not clear), then checks."""
    if os.getgroups():
        os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if _capset(_cap_header, _no_caps) != 0:
        raise OSError(ctypes.get_errno(), "dropping the worker's capabilities")
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    if _capget(_cap_header, _caps_left) != 0 or bytes(_caps_left).strip(b"\0"):
        raise OSError("capabilities are left after dropping them")
    if os.getresuid() != (uid,) * 3 or os.getresgid() != (gid,) * 3:
        raise OSError("the run's uid and gid did not apply")


def _enter(path):
    """chdir(path), refusing a symlink anywhere on the way (a run may have planted one)."""
    fd = _syscall(SYS_OPENAT2, AT_FDCWD, os.fsencode(path), ctypes.byref(_how), _how_size)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot enter directory {path} (symlinks are not followed): "
                      f"{os.strerror(err)}")
    try:
        os.fchdir(fd)
    finally:
        os.close(fd)


def _read(path):
    """The whole file at `path`, with plain system calls (cheaper in a fresh child than open())."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        parts = []
        while True:
            part = os.read(fd, 1 << 16)
            if not part:
                return b"".join(parts)
            parts.append(part)
    finally:
        os.close(fd)


def _serve():
    """Serves requests until the init closes the socket. Returns only in a forked child: that
    child's request (bytes) and its five descriptors."""
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=3)
    buf = bytearray(MAX_REQUEST)
    wipe = (ctypes.c_char * MAX_REQUEST).from_buffer(buf)
    fd_bytes = RUN_FDS * ctypes.sizeof(ctypes.c_int)
    ancillary = socket.CMSG_SPACE(fd_bytes)
    ctl.send(b'{"ready": true}')
    while True:
        try:
            n, ancdata, _flags, _addr = ctl.recvmsg_into([buf], ancillary, socket.MSG_CMSG_CLOEXEC)
        except InterruptedError:
            continue
        if n == 0:
            os._exit(0)
        fds = []
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                count = len(data) // ctypes.sizeof(ctypes.c_int)
                fds += (ctypes.c_int * count).from_buffer_copy(data[:count * ctypes.sizeof(ctypes.c_int)])
        if len(fds) != RUN_FDS:
            for fd in fds:
                os.close(fd)
            ctl.send(b'{"error": "a request needs five descriptors"}')
            continue
        pid = os.fork()
        if pid == 0:
            # Descriptor 3 becomes the run's; the socket object must not close it later.
            ctl.detach()
            return bytes(buf[:n]), fds
        ctypes.memset(wipe, 0, n)
        for fd in fds:
            os.close(fd)
        ctl.send(json.dumps({"pid": pid}).encode())
        _, wait_status, usage = os.wait4(pid, 0)
        cpu_ns = int((usage.ru_utime + usage.ru_stime) * 1e9)
        ctl.send(json.dumps({"exit": wait_status, "cpu_ns": cpu_ns,
                             "maxrss": usage.ru_maxrss * 1024}).encode())


def _run(message, fds):
    """The child: becomes the run and runs its program. Never returns."""
    status = 1
    # Everything this needs once the worker's namespace is emptied, as locals.
    exit_code, print_exception, modules, stdout, stderr, leave = (
        _exit_code, traceback.print_exception, sys.modules, sys.stdout, sys.stderr, os._exit)
    try:
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
        for target, fd in enumerate(high):
            os.dup2(fd, target)
        os.closerange(RUN_FDS, 65536)
        os.setsid()
        req = json.loads(message)
        _become(req["uid"], req["gid"])
        for res, soft, hard in req["rlimits"]:
            resource.setrlimit(res, (soft, hard))
        _enter(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        # sys.stdin, sys.stdout and sys.stderr already wrap descriptors 0-2, which now are the
        # run's pipes; the worker never used them, so their buffers are empty. (The child stays
        # non-dumpable: its own /proc/self works, other processes cannot reach into it.)
        path = req["argv"][-1]
        sys.argv = [path]
        sys.path.insert(0, os.path.dirname(path))
        main = types.ModuleType("__main__")
        main.__dict__.update({"__file__": path, "__builtins__": builtins, "__cached__": None})
        modules["__main__"] = main
        source = _read(path)
        code = _OWN.get(source)
    except BaseException as e:  # noqa: BLE001 - the run cannot start: say why, as the init would
        try:
            os.write(2, f"codebeaker: starting the run: {e}\n".encode())
        finally:
            os._exit(127)
    del req, message, fds, high
    # The worker's module namespace: the program's frames lead back to it (f_back.f_globals).
    globals().clear()
    try:
        try:
            if code is None:
                code = compile(source, path, "exec")
            del source
            exec(code, main.__dict__)
            status = 0
        except SystemExit as e:
            status = exit_code(e)
        except BaseException as e:  # noqa: BLE001 - report like the interpreter does
            tb = e.__traceback__
            while tb is not None and tb.tb_frame.f_code.co_filename != path:
                tb = tb.tb_next
            print_exception(type(e), e, tb)
            status = 1
        # What the interpreter does at exit: wait for threads, run atexit handlers.
        try:
            if "threading" in modules:
                modules["threading"]._shutdown()
            import atexit
            atexit._run_exitfuncs()
        except BaseException:  # noqa: BLE001
            pass
        for stream in (stdout, stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001
                pass
    finally:
        leave(status)


def _warm_up():
    """Touch the lazily initialised parts every run uses, once, before any fork."""
    import linecache  # noqa: F401
    exec(compile("import json, os, sys\nx = json.loads(json.dumps({'a': [1, 2.5]}))", "<warm>", "exec"), {})
    with open("/dev/null", encoding="utf-8") as f:
        f.read(0)
    io.TextIOWrapper(io.BufferedWriter(io.FileIO(os.dup(1), "w")), encoding="utf-8").close()


_warm_up()
gc.collect()
gc.freeze()
_run(*_serve())
