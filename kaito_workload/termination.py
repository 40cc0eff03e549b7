"""The one-line failure a workload container leaves for Kubernetes.

A failing container prints its reason as one line on stderr and writes the same line to its
termination log (the container's `terminationMessagePath`, `/dev/termination-log`).  The kubelet
copies at most 4096 bytes of that file into the pod's status, where `kubectl describe pod` shows
it and the workspace controller reads it into the Workspace's conditions; a longer line is cut
there, marked with `…`.  Outside a pod the default path is left alone (nothing is created under
/dev): `$KAITO_TERMINATION_LOG` or an explicit path points elsewhere (the sandbox, tests).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_PATH = "/dev/termination-log"
PATH_ENV = "KAITO_TERMINATION_LOG"
#: What the kubelet reads of a termination message file.
MAX_BYTES = 4096
_CUT = "…"


def termination_log(explicit: str | None = None) -> str:
    """The path to write: `explicit`, else `$KAITO_TERMINATION_LOG`, else the pod's."""
    return explicit or os.environ.get(PATH_ENV, DEFAULT_PATH)


def one_line(message: str) -> str:
    """`message` with every run of whitespace (newlines included) made one space."""
    return " ".join(message.split())


def file_content(line: str, limit: int = MAX_BYTES) -> bytes:
    """`line` and a newline as UTF-8 in at most `limit` bytes, cut on a character boundary
    and ended with `…` when it is longer."""
    data = (line + "\n").encode()
    if len(data) <= limit:
        return data
    tail = (_CUT + "\n").encode()
    head = line.encode()[: limit - len(tail)].decode(errors="ignore")
    return head.encode() + tail


def report_failure(message: str, path: str | None = None) -> str:
    """Prints `message` as one line on stderr, writes it to the termination log (see
    :func:`termination_log` for which) and returns the line.  A log that cannot be written
    is skipped: the line on stderr still tells."""
    line = one_line(message)
    print(line, file=sys.stderr, flush=True)
    target = termination_log(path)
    if target != DEFAULT_PATH or Path(target).exists():
        try:
            Path(target).write_bytes(file_content(line))
        except OSError:
            pass
    return line
