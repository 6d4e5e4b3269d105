"""Child processes that do not outlive the process that started them.

On Linux the kernel can send a child a signal when its parent dies, however it dies (even
SIGKILL, where no handler runs): `PR_SET_PDEATHSIG`, asked for in the child between `fork` and
`exec`. Elsewhere the request does not exist, and a parent that is killed outright leaves
its children running.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def dies_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """A `preexec_fn` for `subprocess.Popen`: the child gets `sig` when this process dies.

    The parent is the thread that starts the child, so start it from the main thread. None
    where the platform cannot do it.
    """
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def request() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), sig)

    return request
