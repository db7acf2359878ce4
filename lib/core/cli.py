"""How every command of the project ends (run_all, predict, scripts/): its exit code, and any failure as one line
on stderr, never a traceback (FINCOMPRESS_DEBUG=1 shows one). Torch-free."""
import os
import sys
from typing import Callable

from lib.core.errors import FinCompressError


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:160]


def quiet_stdout() -> None:
    """stdout's descriptor to /dev/null, so that the interpreter's flush of what is still buffered, at exit,
    cannot fail a second time with a traceback."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # a stdout without a descriptor (replaced in-process) has none to flush to
        pass


def run_cli(main: Callable, prog: str) -> None:
    """main()'s exit code; every failure is one line on stderr, never a traceback (FINCOMPRESS_DEBUG=1 shows one)."""
    try:
        code = main()
    except FinCompressError as e:
        message = str(e).replace("\n", " ")
        print(f"{prog}: error: {message}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:  # the reader downstream stopped early (| head): not an error of ours
        quiet_stdout()
        code = 0
    except Exception as e:
        if os.environ.get("FINCOMPRESS_DEBUG"):
            raise
        print(f"{prog}: error: unexpected {type(e).__name__}: {first_line(e)} (a bug: please report it; "
              "FINCOMPRESS_DEBUG=1 shows the traceback)", file=sys.stderr)
        code = 1
    sys.exit(code)
