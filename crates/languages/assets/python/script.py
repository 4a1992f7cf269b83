# CodeBeaker launcher for Python programs (script mode). The program is program.py next to this
# file; it runs as if it were this file's name in the working directory (`python3 main.py` run in
# the workspace): the working directory is first on sys.path, and sys.argv[0], __file__ and
# tracebacks name main.py there, never the directory the launcher lives in. A program that does not
# compile is reported on descriptor 4 (`syntax`), which is closed before the program starts.


def __cb_launch():
    import linecache
    import os
    import sys
    import types

    here = os.path.dirname(os.path.abspath(__file__))
    name = os.path.basename(__file__)
    cwd = os.getcwd()
    path = os.path.join(cwd, name)
    with open(os.path.join(here, "program.py"), "rb") as stream:
        source = stream.read()
    try:
        verdict = os.fdopen(4, "wb")
    except OSError:
        verdict = None
    try:
        code = compile(source, path, "exec")
    except (SyntaxError, ValueError) as error:
        import traceback

        traceback.print_exception(type(error), error, None)
        if verdict is not None:
            verdict.write(b"syntax")
            verdict.close()
        return 1
    if verdict is not None:
        verdict.close()
    text = source.decode("utf-8", "replace")
    linecache.cache[path] = (len(text), None, text.splitlines(True), path)
    sys.argv[0] = name
    if sys.path and sys.path[0] in ("", here):
        sys.path[0] = cwd
    else:
        sys.path.insert(0, cwd)
    main = types.ModuleType("__main__")
    main.__dict__.update({"__file__": path, "__cached__": None, "__builtins__": __builtins__})
    sys.modules["__main__"] = main
    try:
        exec(code, main.__dict__)
    except SystemExit:
        raise
    except BaseException as error:  # noqa: BLE001 - report like the interpreter does
        import traceback

        tb = error.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != path:
            tb = tb.tb_next
        sys.stdout.flush()
        traceback.print_exception(type(error), error, tb)
        return 130 if isinstance(error, KeyboardInterrupt) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(__cb_launch())
