# CodeBeaker snippet runner for Python. The user's code is in snippet.py next to this file and runs
# in a fresh namespace that holds only `input_data` (and the builtins): nothing here is visible to it.


def __cb_main():
    import json
    import os
    import sys

    with open(3, "rb") as stream:
        raw = stream.read()
    try:
        input_data = json.loads(raw) if raw.strip() else None
    except ValueError as error:
        sys.stderr.write("codebeaker: the snippet input is not valid JSON: %s\n" % error)
        return 1
    # Keep the result pipe away from processes the snippet may start (dup() is non-inheritable).
    result_fd = os.dup(4)
    os.close(4)

    name = "<snippet>"
    here = os.path.dirname(os.path.abspath(__file__))
    # The snippet imports from the working directory (the workspace), never from here.
    if sys.path and sys.path[0] in ("", here):
        sys.path[0] = os.getcwd()
    else:
        sys.path.insert(0, os.getcwd())
    with open(os.path.join(here, "snippet.py"), encoding="utf-8") as source:
        code = source.read()
    namespace = {"__name__": "__main__", "__builtins__": __builtins__, "input_data": input_data}
    try:
        exec(compile(code, name, "exec"), namespace)
    except SystemExit:
        raise
    except BaseException as error:
        import linecache
        import traceback

        # Lets the traceback show the offending source lines.
        linecache.cache[name] = (len(code), None, code.splitlines(True), name)
        tb = error.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != name:
            tb = tb.tb_next
        sys.stdout.flush()
        traceback.print_exception(type(error), error, tb)
        return 1
    if "result" not in namespace:
        sys.stderr.write("snippet did not set `result`\n")
        return 1
    try:
        text = json.dumps(
            namespace["result"], ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )
    except (TypeError, ValueError) as error:
        sys.stderr.write("codebeaker: `result` is not JSON-serializable: %s\n" % error)
        return 1
    with open(result_fd, "wb") as stream:
        stream.write(text.encode("utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(__cb_main())
