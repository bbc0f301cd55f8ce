"""The program that runs INSIDE the sandbox.

The server never imports this module: it reads this file as text and hands
it to the sandbox (bwrap: ``--ro-bind-data FD /sandbox/runner.py``; Landlock:
executed by the bootstrap after the restrictions are in place), where the
dedicated system interpreter runs it with ``-I -S -B``, so stdlib only.

Protocol: ``{"code": "..."}`` as JSON on stdin (the server caps its size
and writes exactly that shape);
the code's own output goes to stdout/stderr untouched; one JSON line goes to
the result fd: ``{"value": repr-or-null, "exception": type-name-or-null,
"limit": name-or-null}``. The server parses only that bounded JSON.

argv: RESULT_FD VALUE_CHARS MAX_CODE_BYTES ALARM_SECONDS
"""

import os
import sys


def main(argv):
    import builtins
    import signal

    result_fd = int(argv[0])
    value_chars = int(argv[1])
    max_code = int(argv[2])
    alarm = float(argv[3])
    result = {"value": None, "exception": None, "limit": None}  # type: dict[str, str | None]
    state = {"written": False}

    def write_result():
        if state["written"]:
            return
        state["written"] = True
        data = (_dumps(result) + "\n").encode()
        try:
            while data:
                data = data[os.write(result_fd, data) :]
        except OSError:
            pass

    def flush_std():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # reentrant call from a signal handler, closed pipe...
                pass

    def limit_handler(name, code):
        # Ends the run from inside a little before the server's hard kill, so
        # buffered output reaches the server and the limit is named.
        def handler(signum, frame):
            result["limit"] = name
            flush_std()
            write_result()
            os._exit(code)

        return handler

    signal.signal(signal.SIGXCPU, limit_handler("cpu", 152))
    if alarm > 0:
        signal.signal(signal.SIGALRM, limit_handler("wall_time", 124))
        signal.setitimer(signal.ITIMER_REAL, alarm)

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")  # pyright: ignore[reportAttributeAccessIssue] - a TextIOWrapper here
        except Exception:
            pass

    exit_code = 0
    source = ""
    try:
        raw = sys.stdin.buffer.read(max_code + 1)
        if len(raw) > max_code:
            raise ValueError("code is larger than the sandbox accepts")
        source = _loads_code(raw)
        sys.argv = ["<code>"]
        namespace = {"__name__": "__main__", "__builtins__": builtins, "__doc__": None}
        exit_code = _execute(source, namespace, result, value_chars)
    except SystemExit as exc:
        exit_code = _exit_code(exc)
    except BaseException as exc:  # the user's exception, reported not raised
        exit_code = 1
        result["exception"] = type(exc).__name__
        result["limit"] = result["limit"] or _limit_of(exc)
        _print_traceback(exc, source)
    flush_std()
    write_result()
    # os._exit: no waiting for threads the code left running, no atexit hooks.
    os._exit(exit_code)


# The json module costs ~5 ms of start-up (it imports re and enum); the
# protocol is fixed, so the C helpers it is built on are enough.
_PREFIX = '{"code": "'


def _loads_code(raw):
    """Parse exactly ``{"code": "<string>"}`` as the server's json.dumps writes it."""
    import _json

    text = raw.decode("utf-8")
    if not text.startswith(_PREFIX):
        raise ValueError("malformed request")
    source, end = _json.scanstring(text, len(_PREFIX), True)
    if text[end:].strip() != "}":
        raise ValueError("malformed request")
    return source


def _dumps(result):
    import _json

    def enc(v):
        return "null" if v is None else _json.encode_basestring_ascii(str(v))

    return "{" + ", ".join("%s: %s" % (enc(k), enc(v)) for k, v in result.items()) + "}"


def _execute(source, namespace, result, value_chars):
    import _ast

    # With PyCF_ONLY_AST, compile() returns an _ast.Module, which typeshed types as any AST;
    # ast.parse() would say Module but imports the ast module into every run.
    tree = compile(source, "<code>", "exec", _ast.PyCF_ONLY_AST, dont_inherit=True)
    last = None
    if tree.body and isinstance(tree.body[-1], _ast.Expr):  # pyright: ignore[reportAttributeAccessIssue] - a Module
        last = _ast.Expression(tree.body.pop().value)  # pyright: ignore[reportAttributeAccessIssue] - a Module
    exec(compile(tree, "<code>", "exec", dont_inherit=True), namespace)  # pyright: ignore[reportArgumentType] - a Module
    if last is not None:
        value = eval(compile(last, "<code>", "eval", dont_inherit=True), namespace)
        if value is not None:
            try:
                text = repr(value)
            except BaseException as exc:  # a hostile __repr__
                text = "<repr() failed: %s>" % type(exc).__name__
            result["value"] = text[:value_chars]
    return 0


def _exit_code(exc):
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except Exception:
        pass
    return 1


def _limit_of(exc):
    import errno

    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, OSError):
        return {
            errno.EFBIG: "file_size",
            errno.ENOSPC: "disk",
            errno.EDQUOT: "disk",
            errno.EAGAIN: "processes",
            errno.EMFILE: "open_files",
        }.get(exc.errno)  # pyright: ignore[reportArgumentType] - None (no errno) finds nothing
    if isinstance(exc, RuntimeError) and "new thread" in str(exc):
        return "processes"
    return None


def _print_traceback(exc, source):
    try:
        import linecache
        import traceback

        linecache.cache["<code>"] = (len(source), None, source.splitlines(True), "<code>")
        tb = exc.__traceback__
        # Drop the runner's own frames: the model only needs its code's.
        while tb is not None and tb.tb_frame.f_code.co_filename != "<code>":
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb, file=sys.stderr)
    except BaseException:
        try:
            print("%s: %s" % (type(exc).__name__, exc), file=sys.stderr)
        except BaseException:
            pass


if __name__ == "__main__":
    main(sys.argv[1:])
