"""What the benchmarks measure of the machine itself: this process's own
peak memory, and how fast the CPU is running at the moment.

peak_rss_kb(): this process's own peak resident memory.

Not getrusage()'s ru_maxrss: Linux carries it across exec, so a child
started by a parent that had grown large reports the parent's peak (a
measurement child of the dashboard benchmark read 434 MB, the loader's
size, before doing anything). VmHWM belongs to the process image and starts
afresh at exec.
"""

from __future__ import annotations

import resource
import sys
import time


def peak_rss_kb() -> int:
    """Peak resident memory of this process image, in kB."""
    if sys.platform == "linux":
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux; a fallback elsewhere


def cpu_probe() -> float:
    """Seconds a fixed pure-Python loop takes now. This machine's shared
    cores run it in 1.06 s at their quickest and up to 1.8 s within the
    same hour, with nothing of ours running: print it beside the figures,
    so that a slow run shows as the machine's and not the code's."""
    started = time.perf_counter()
    sum(i * i for i in range(10**7))
    return time.perf_counter() - started
