"""The flows a user of Judge0's official Python SDK runs, against a CodeBeaker server.

Run as `python sdk_flows.py <flow>` with JUDGE0_ENDPOINT (the server's `/judge0`) and
JUDGE0_TOKEN set. Each check prints `ok: <what>`; the first that fails raises, so the exit status
is non-zero and the traceback names it.
"""

import os
import sys
import time

import judge0
from judge0 import Client, File, Filesystem, Status, Submission


def check(what, ok, got=None):
    if not ok:
        raise AssertionError(f"{what}: got {got!r}")
    print(f"ok: {what}", flush=True)


def client():
    return Client(
        endpoint=os.environ["JUDGE0_ENDPOINT"],
        headers={"X-Auth-Token": os.environ["JUDGE0_TOKEN"]},
    )


def verdicts():
    c = client()
    check("the client reads config_info", c.config.max_submission_batch_size == 20, c.config)
    check("the version maps aliases", c.version == "1.13.1", c.version)
    check("Python is supported", c.is_language_supported(judge0.PYTHON))
    check("C is supported", c.is_language_supported(judge0.C))

    ok = judge0.run(
        client=c,
        source_code="print(input().upper())",
        language=judge0.PYTHON,
        stdin="hi",
        expected_output="HI",
    )
    check("Accepted", ok.status == Status.ACCEPTED, (ok.status, ok.stderr, ok.message))
    check("stdout", ok.stdout == "HI\n", ok.stdout)
    check("time is seconds", ok.time is not None and 0 <= ok.time < 10, ok.time)
    check("memory is KB", ok.memory is None or ok.memory > 0, ok.memory)

    wrong = judge0.run(
        client=c, source_code="print(41)", language=judge0.PYTHON, expected_output="42"
    )
    check("Wrong Answer", wrong.status == Status.WRONG_ANSWER, wrong.status)

    slow = judge0.run(
        client=c,
        source_code="while True: pass",
        language=judge0.PYTHON,
        cpu_time_limit=1,
        cpu_extra_time=0.5,
        wall_time_limit=3,
    )
    check("Time Limit Exceeded", slow.status == Status.TIME_LIMIT_EXCEEDED, slow.status)

    broken = judge0.run(client=c, source_code="int main( {", language=judge0.C)
    check("Compilation Error", broken.status == Status.COMPILATION_ERROR, broken.status)
    check("compile_output", "error" in (broken.compile_output or ""), broken.compile_output)

    nzec = judge0.run(client=c, source_code="raise SystemExit(3)", language=judge0.PYTHON)
    check("Runtime Error (NZEC)", nzec.status == Status.RUNTIME_ERROR_NZEC, nzec.status)
    check("exit_code", nzec.exit_code == 3, nzec.exit_code)

    segv = judge0.run(
        client=c,
        source_code="import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)",
        language=judge0.PYTHON,
    )
    check("Runtime Error (SIGSEGV)", segv.status == Status.RUNTIME_ERROR_SIGSEGV, segv.status)
    check("exit_signal", segv.exit_signal == 11, segv.exit_signal)

    fpe = judge0.run(
        client=c,
        source_code="#include <signal.h>\nint main(void) { raise(SIGFPE); return 0; }",
        language=judge0.C,
    )
    check("Runtime Error (SIGFPE), compiled", fpe.status == Status.RUNTIME_ERROR_SIGFPE, fpe.status)
    print("flow verdicts: all checks passed")


def batch():
    c = client()
    submissions = [
        Submission(source_code="print(1)", language=judge0.PYTHON, expected_output="1"),
        Submission(source_code="print(2)", language=judge0.PYTHON, expected_output="3"),
        Submission(source_code="echo three", language=judge0.BASH),
    ]
    done = judge0.run(client=c, submissions=submissions)
    statuses = [s.status for s in done]
    check(
        "a batch is judged each on its own",
        statuses == [Status.ACCEPTED, Status.WRONG_ANSWER, Status.ACCEPTED],
        statuses,
    )
    check("a batch keeps its order", done[2].stdout == "three\n", done[2].stdout)

    cases = judge0.run(
        client=c,
        source_code="print(int(input()) * 2)",
        language=judge0.PYTHON,
        test_cases=[("1", "2"), ("5", "10"), ("7", "15")],
    )
    check(
        "test cases",
        [s.status for s in cases] == [Status.ACCEPTED, Status.ACCEPTED, Status.WRONG_ANSWER],
        [s.status for s in cases],
    )
    print("flow batch: all checks passed")


def poll():
    c = client()
    submission = Submission(
        source_code="import time\ntime.sleep(1)\nprint('late')", language=judge0.PYTHON
    )
    c.create_submission(submission)
    check("wait=false answers with a token at once", submission.token is not None)
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        c.get_submission(submission)
        seen.append(submission.status)
        if submission.is_done():
            break
        time.sleep(0.1)
    check("polled until done", submission.is_done(), seen)
    check("pending first", seen[0] in (Status.IN_QUEUE, Status.PROCESSING), seen)
    check("then Accepted", submission.status == Status.ACCEPTED, seen)
    check("with its output", submission.stdout == "late\n", submission.stdout)

    waited = judge0.wait(
        client=c,
        submissions=judge0.async_execute(
            client=c, source_code="print('async')", language=judge0.PYTHON
        ),
    )
    check("async_execute then wait", waited.stdout == "async\n", waited.stdout)
    print("flow poll: all checks passed")


def encodings():
    c = client()
    text = judge0.run(
        client=c,
        source_code="import sys\nprint(sys.stdin.read()[::-1], end='')\nprint('é ✓', file=sys.stderr)",
        language=judge0.PYTHON,
        stdin="ab€\n",
    )
    check("non-ASCII stdin and stdout survive base64", text.stdout == "\n€ba", text.stdout)
    check("stderr too", text.stderr == "é ✓\n", text.stderr)

    args = judge0.run(
        client=c,
        source_code="import sys\nprint(sys.argv[1:])",
        language=judge0.PYTHON,
        command_line_arguments="one 'two three'",
    )
    check("command_line_arguments", args.stdout == "['one', 'two three']\n", args.stdout)

    files = judge0.run(
        client=c,
        source_code="print(open('data/n.txt').read().strip() * 2)",
        language=judge0.PYTHON,
        additional_files=Filesystem(content=[File(name="data/n.txt", content="21")]),
    )
    check("additional_files are in the working directory", files.stdout == "2121\n", files.stdout)
    print("flow encodings: all checks passed")


if __name__ == "__main__":
    {"verdicts": verdicts, "batch": batch, "poll": poll, "encodings": encodings}[sys.argv[1]]()
