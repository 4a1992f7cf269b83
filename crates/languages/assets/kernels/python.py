# CodeBeaker's kernel for a Python context: one long-lived interpreter in the box that runs the
# context's cells in one namespace, so that what a cell defines is there for the next.
#
# Protocol (the box's init is the other end of the SOCK_SEQPACKET socket on fd 3): once started
# the kernel sends {"ready": true}. A cell is one JSON message {"env": {...}} with five
# descriptors attached (stdin, stdout, stderr, the cell's code, the cell's result). The kernel
# points its 0-2 at the first three, reads the code to its end, runs it, writes the cell's result
# as JSON to the last one, points 0-2 back at /dev/null, closes the cell's descriptors and answers
# {"exit": status, "cpu_ns": n, "maxrss": bytes} (status 0, or 1 when the cell raised). The
# result is {"results": [{"data": {mime: value}, "main": bool}], "error": {"name", "value",
# "traceback"} or null, "execution_count": n}.
#
# Cells run like IPython's: every statement but a final expression is executed, then the final
# expression is evaluated and its value (unless None) is the cell's main result, as the MIME
# bundle its rich-display methods offer (_repr_mimebundle_, _repr_html_, _repr_png_, ...).
# Top-level `await` works. `display(obj)` (a builtin here, as in IPython) adds a result.
# matplotlib figures come back as PNG results through the backend `module://codebeaker_inline`
# (plt.show(), and every figure still open at the end of a cell). SIGINT interrupts the cell with
# KeyboardInterrupt and leaves the namespace as the interrupted cell left it.
#
# With `--relay LANGUAGE PROGRAM...` the kernel instead drives another interpreter that keeps the
# state (Node.js, Bash): see the relay section at the end.
import sys

if sys.path and sys.path[0] == "":
    del sys.path[0]

import ast
import base64
import builtins
import fcntl
import importlib.abc
import importlib.util
import inspect
import io
import json
import linecache
import os
import resource
import select
import shlex
import signal
import subprocess
import tempfile
import socket
import traceback
import types

CELL_FDS = 5
MAX_REQUEST = 1 << 20

# The control socket leaves fd 3, which a cell's program may use as it likes.
_ctl_fd = fcntl.fcntl(3, fcntl.F_DUPFD_CLOEXEC, 100)
os.close(3)
_ctl = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=_ctl_fd)
_null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
_in_cell = False


_relay = None


def _on_sigint(_signum, _frame):
    # Only a cell is interrupted; a late interrupt between cells is dropped.
    if _relay is not None:
        _relay.interrupt()
    elif _in_cell:
        raise KeyboardInterrupt


signal.signal(signal.SIGINT, _on_sigint)


def _receive():
    """The next cell's request and its five descriptors; exits when the init is gone."""
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(_ctl, MAX_REQUEST, CELL_FDS)
        except InterruptedError:
            continue
        if not msg:
            os._exit(0)
        for fd in fds:
            os.set_inheritable(fd, False)
        if len(fds) != CELL_FDS:
            for fd in fds:
                os.close(fd)
            continue
        return json.loads(msg), fds


def _read_all(fd):
    parts = []
    while True:
        part = os.read(fd, 1 << 16)
        if not part:
            return b"".join(parts)
        parts.append(part)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BrokenPipeError:
            return
        view = view[n:]


class Cell:
    """What one cell produced besides its output."""

    def __init__(self):
        self.results = []
        self.error = None


_cell = Cell()

# The rich-display methods, in the order IPython's formatters know them.
_REPRS = (
    ("text/html", "_repr_html_"),
    ("text/markdown", "_repr_markdown_"),
    ("image/svg+xml", "_repr_svg_"),
    ("image/png", "_repr_png_"),
    ("image/jpeg", "_repr_jpeg_"),
    ("text/latex", "_repr_latex_"),
    ("application/json", "_repr_json_"),
    ("application/javascript", "_repr_javascript_"),
    ("application/pdf", "_repr_pdf_"),
)


def _bundle(obj):
    """The MIME bundle `obj` offers: every rich representation it has, and text/plain."""
    data = {}
    if not isinstance(obj, type):
        method = getattr(obj, "_repr_mimebundle_", None)
        if callable(method):
            try:
                got = method(include=None, exclude=None)
            except TypeError:
                got = method()
            if isinstance(got, tuple):
                got = got[0]
            if isinstance(got, dict):
                data.update(got)
        for mime, name in _REPRS:
            method = getattr(obj, name, None)
            if mime in data or not callable(method):
                continue
            try:
                value = method()
            except NotImplementedError:
                continue
            if isinstance(value, tuple):
                value = value[0]
            if value is not None:
                data[mime] = value
    data.setdefault("text/plain", repr(obj))
    for mime, value in list(data.items()):
        if isinstance(value, (bytes, bytearray)):
            data[mime] = base64.b64encode(value).decode("ascii")
        elif mime == "application/json":
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                data[mime] = str(value)
        elif not isinstance(value, str):
            data[mime] = str(value)
    return data


def display(*objs, **_kwargs):
    """Adds each object to the cell's results, as IPython's display() does."""
    for obj in objs:
        _cell.results.append({"data": _bundle(obj), "main": False})


builtins.display = display


# matplotlib: figures become PNG results, with no configuration by the user.
def _show_figures(*_args, **_kwargs):
    pylab_helpers = sys.modules.get("matplotlib._pylab_helpers")
    if pylab_helpers is None:
        return
    for manager in pylab_helpers.Gcf.get_all_fig_managers():
        figure = manager.canvas.figure
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", bbox_inches="tight")
        width, height = figure.get_size_inches() * figure.dpi
        text = f"<Figure size {width:g}x{height:g} with {len(figure.axes)} Axes>"
        _cell.results.append({
            "data": {"image/png": base64.b64encode(buffer.getvalue()).decode("ascii"),
                     "text/plain": text},
            "main": False,
        })
    pylab_helpers.Gcf.destroy_all()


class _InlineBackend(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """The module `codebeaker_inline`, made when matplotlib first loads it."""

    NAME = "codebeaker_inline"

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.NAME:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        from matplotlib.backend_bases import FigureManagerBase
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        module.FigureCanvas = FigureCanvasAgg
        module.FigureManager = FigureManagerBase
        module.show = _show_figures


sys.meta_path.append(_InlineBackend())
os.environ.setdefault("MPLBACKEND", "module://" + _InlineBackend.NAME)


def _error(exc, code_frames_only=True):
    """A cell's exception as {name, value, traceback}, the traceback from the cell's own frames."""
    tb = exc.__traceback__
    if code_frames_only:
        while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell-"):
            tb = tb.tb_next
    if isinstance(exc, SyntaxError):
        text = "".join(traceback.format_exception_only(type(exc), exc))
    else:
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    return {"name": type(exc).__name__, "value": str(exc), "traceback": text}


class PythonCells:
    """Runs cells in one module namespace, `__main__`."""

    def __init__(self):
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = main
        self.namespace = main.__dict__
        self.count = 0
        self.loop = None

    def _run(self, code):
        global _in_cell
        _in_cell = True
        try:
            value = eval(code, self.namespace)
            if inspect.iscoroutine(value) and code.co_flags & inspect.CO_COROUTINE:
                if self.loop is None:
                    import asyncio
                    self.loop = asyncio.new_event_loop()
                value = self.loop.run_until_complete(value)
            return value
        finally:
            _in_cell = False

    def run(self, source):
        self.count += 1
        filename = f"<cell-{self.count}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        try:
            tree = compile(source, filename, "exec", ast.PyCF_ONLY_AST | flags)
        except (SyntaxError, ValueError) as e:
            _cell.error = _error(e, False)
            return
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        try:
            self._run(compile(tree, filename, "exec", flags))
            if last is not None:
                value = self._run(compile(last, filename, "eval", flags))
                if value is not None:
                    self.namespace["_"] = value
                    _cell.results.append({"data": _bundle(value), "main": True})
        except BaseException as e:  # noqa: BLE001 - a cell's exception is its result
            _cell.error = _error(e)
        finally:
            if "matplotlib.pyplot" in sys.modules:
                try:
                    _show_figures()
                except Exception as e:  # noqa: BLE001
                    _cell.error = _cell.error or _error(e)


def _serve(cells):
    global _cell
    _ctl.send(b'{"ready": true}')
    while True:
        try:
            req, fds = _receive()
        except KeyboardInterrupt:
            continue
        usage = resource.getrusage(resource.RUSAGE_SELF)
        status = 0
        saved_env = dict(os.environ)
        _cell = Cell()
        try:
            for target in range(3):
                os.dup2(fds[target], target)
            sys.stdin = open(0, "r", encoding="utf-8", errors="replace", closefd=False)
            source = _read_all(fds[3]).decode("utf-8", errors="replace")
            os.environ.update({str(k): str(v) for k, v in (req.get("env") or {}).items()})
            cells.run(source)
        except KeyboardInterrupt as e:
            _cell.error = _error(e, False)
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except BaseException:  # noqa: BLE001
                    pass
            if _cell.error is not None:
                status = 1
            os.environ.clear()
            os.environ.update(saved_env)
            result = {"results": _cell.results, "error": _cell.error,
                      "execution_count": cells.count}
            try:
                body = json.dumps(result).encode()
            except (TypeError, ValueError) as e:
                body = json.dumps({"results": [], "error": _error(e, False),
                                   "execution_count": cells.count}).encode()
            _write_all(fds[4], body)
            for target in range(3):
                os.dup2(_null, target)
            for fd in fds:
                os.close(fd)
            after = resource.getrusage(resource.RUSAGE_SELF)
            cpu_ns = int((after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime) * 1e9)
            _ctl.send(json.dumps({"exit": status << 8, "cpu_ns": cpu_ns,
                                  "maxrss": after.ru_maxrss * 1024}).encode())


# The relay: JavaScript and Bash contexts keep their state in one Node.js or Bash process that
# this kernel starts in a process group of its own. Cells go to it over a pipe (Node: a JSON line;
# Bash: a line that sources the cell's file and writes its status); its stdout and stderr are
# forwarded to the cell's while the cell runs, and whatever it writes between cells is dropped
# when the next cell starts. An interrupt goes to its whole group (Bash is told to `return` from
# the cell on SIGINT; Node stops the cell's script). When the process dies, so does this kernel:
# the context's state is gone, and the init says so.
class RelayCells:
    def __init__(self, language, argv):
        self.language = language
        self.count = 0
        cells_r, self.cells_w = os.pipe()
        self.results_r, results_w = os.pipe()
        if language == "bash":
            self.dir = tempfile.mkdtemp(prefix=".codebeaker-bash-")
            argv = argv + [f"/dev/fd/{cells_r}"]
        else:
            argv = argv + [str(cells_r), str(results_w)]
        self.results_fd = results_w
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            pass_fds=(cells_r, results_w), start_new_session=True)
        os.close(cells_r)
        os.close(results_w)
        self.out = self.proc.stdout.fileno()
        self.err = self.proc.stderr.fileno()
        for fd in (self.out, self.err, self.results_r):
            os.set_blocking(fd, False)
        if language == "bash":
            self._send("trap 'return 130 2>/dev/null' INT\n")

    def interrupt(self):
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
        except OSError:
            pass

    def _send(self, text):
        _write_all(self.cells_w, text.encode())

    def _gone(self):
        os._exit(1)

    def _drain(self, forward):
        for fd, target in ((self.out, 1), (self.err, 2)):
            while True:
                try:
                    data = os.read(fd, 1 << 16)
                except BlockingIOError:
                    break
                if not data:
                    self._gone()
                if forward:
                    _write_all(target, data)

    def run(self, source):
        self.count += 1
        self._drain(False)
        if self.language == "bash":
            path = os.path.join(self.dir, f"cell-{self.count}.sh")
            with open(path, "w", encoding="utf-8") as f:
                f.write(source)
            self._send(f". {shlex.quote(path)}; printf '%s\\n' \"$?\" >&{self.results_fd}\n")
        else:
            self._send(json.dumps({"code": source}) + "\n")
        answer = b""
        while not answer.endswith(b"\n"):
            try:
                ready, _, _ = select.select([self.out, self.err, self.results_r], [], [])
            except InterruptedError:
                continue
            for fd in ready:
                try:
                    data = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not data:
                    self._gone()
                if fd == self.results_r:
                    answer += data
                else:
                    _write_all(1 if fd == self.out else 2, data)
        self._drain(True)
        if self.language == "bash":
            os.unlink(path)
            status = int(answer.strip() or b"0")
            if status == 130:
                _cell.error = {"name": "KeyboardInterrupt", "value": "interrupted",
                               "traceback": ""}
            return
        reply = json.loads(answer)
        _cell.results.extend(reply.get("results") or [])
        _cell.error = reply.get("error")


for _stream in (sys.stdout, sys.stderr):
    _stream.reconfigure(line_buffering=True, errors="backslashreplace")
if len(sys.argv) > 3 and sys.argv[1] == "--relay":
    _relay = RelayCells(sys.argv[2], sys.argv[3:])
    _serve(_relay)
else:
    _serve(PythonCells())
