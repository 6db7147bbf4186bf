"""Run a command as the terminal's foreground job, the way a shell does: ``make run`` uses it
so Ctrl+C reaches the daemon alone, which stops cleanly, and make never sees an interrupt
(it would report ``make: *** [run] Interrupt`` however well the daemon exits).

Usage: python tools/foreground.py COMMAND [ARGS...]. Without a terminal it just runs COMMAND.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys


def main(argv: list[str]) -> int:
    try:
        tty = os.open("/dev/tty", os.O_RDWR)
    except OSError:
        os.execvp(argv[0], argv)  # no terminal: nothing to hand over
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # a background group taking the tty
        os.tcsetpgrp(tty, os.getpgrp())
        signal.signal(signal.SIGTTOU, signal.SIG_DFL)
        os.close(tty)
        os.execvp(argv[0], argv)
    with contextlib.suppress(OSError):  # the child may have done it already
        os.setpgid(pid, pid)  # also here: whichever of the two runs first
    _, status = os.waitpid(pid, 0)
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    os.tcsetpgrp(tty, os.getpgrp())  # the terminal back to make
    code = os.waitstatus_to_exitcode(status)
    return 0 if code == -signal.SIGINT else (128 - code if code < 0 else code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
