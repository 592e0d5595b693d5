"""A pool process on its way out ignores further terminate signals, so it never dies holding a lock.

How a cancelled task's pool process exits (billiard 4.3): the SIGTERM Celery sends makes billiard's
handler reset SIGTERM to its default action and raise SystemExit; the task unwinds; the process puts
a DEATH message on the result queue, under that queue's write lock, and the parent answers DEATH
with another SIGTERM. billiard blocks SIGTERM around that put, but only in the calling thread. A
process that trained with torch has intra-op threads that do not block it, the kernel delivers the
parent's SIGTERM to one of them, and the default action kills the process between its write and
the lock's release. The parent's next put on that queue then waits forever: the task handler's
sentinel (a cold shutdown stalls inside `pool.join()`, before the unacknowledged message is handed
back) or the pool's exit finalizer (the worker never exits after handing it back).

Ignoring the signal is process-wide, whichever thread it reaches. The process is unwinding to
billiard's own `os._exit` a second later; a SIGKILL still ends it, and Celery sends the parent's
death to it as SIGKILL too (PR_SET_PDEATHSIG).
"""

import signal
from typing import Any

from billiard.common import TERM_SIGNAL
from celery.signals import worker_process_shutdown


@worker_process_shutdown.connect
def ignore_terminate_while_exiting(**_: Any) -> None:
    """Sent in the pool process just before it reports its death to the parent."""
    signal.signal(TERM_SIGNAL, signal.SIG_IGN)
