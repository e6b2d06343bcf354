"""Runs ``convscope.cli.main`` on many argument lists in this one process; the fuzz suite
(tests/test_fuzz_cli.py) starts it with a memory cap.

Reads a JSON list of argument lists on stdin and writes a JSON list of results, one per list:
``code`` (the exit code), ``out`` and ``err`` (the lengths of what was printed), ``err_text``
(its first 2,000 characters) and ``crash`` (the traceback of an exception that escaped
``main``, or "timeout"). With ``FUZZ_STUB_TRAIN=1`` the training run itself (either engine) is
replaced by a stub: only the command line's own checks run. ``serve`` never serves: the
server's blocking run returns at once, so the command's own checks and set-up are what run.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import traceback
from types import FrameType


class Timeout(BaseException):
    """One argument list ran past its time limit (a BaseException: main must not catch it)."""


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Timeout


def _stub_train(config: object, *args: object, **kwargs: object) -> object:
    """A finished run, at once: the fuzz tests the command line, not the training loop."""
    from convscope.train import Result

    return Result(0.5, 1, 0.0, 1.0, [], "checkpoint.npz", "metrics.json")


def run_one(argv: list[str], seconds: int) -> dict[str, object]:
    from convscope import cli

    out, err = io.StringIO(), io.StringIO()
    crash = None
    code: object = None
    signal.alarm(seconds)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
    except SystemExit as done:  # argparse's usage errors and --help
        code = done.code
    except Timeout:
        crash = "timeout"
    except BaseException:  # anything else escaping main is a traceback the user would see
        crash = traceback.format_exc(limit=-8)
    finally:
        signal.alarm(0)
    return {
        "argv": argv,
        "code": code,
        "out": len(out.getvalue()),
        "err": len(err.getvalue()),
        "err_text": err.getvalue()[:2000],
        "crash": crash,
    }


def main() -> None:
    seconds = int(os.environ.get("FUZZ_SECONDS", "10"))
    signal.signal(signal.SIGALRM, _alarm)
    if os.environ.get("FUZZ_STUB_TRAIN") == "1":
        import convscope.train
        import convscope.train_torch

        convscope.train.train = _stub_train  # type: ignore[assignment]
        convscope.train_torch.train_with_torch = _stub_train  # type: ignore[assignment]
    import uvicorn

    uvicorn.run = lambda *args, **kwargs: None  # type: ignore[assignment]
    uvicorn.Server.run = lambda self, *args, **kwargs: None  # type: ignore[assignment]
    argvs = json.load(sys.stdin)
    results = [run_one(argv, seconds) for argv in argvs]
    sys.__stdout__.write(json.dumps(results))


if __name__ == "__main__":
    main()
