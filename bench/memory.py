"""The benchmarks' memory figure: this process's own peak resident memory.

Not getrusage()'s ru_maxrss: Linux carries it across exec, so a child
started by a parent that had grown large reports the parent's peak (a
measurement child of the dashboard benchmark read 434 MB, the loader's
size, before doing anything). VmHWM belongs to the process image and starts
afresh at exec.
"""

from __future__ import annotations

import resource
import sys


def peak_rss_kb() -> int:
    """Peak resident memory of this process image, in kB."""
    if sys.platform == "linux":
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux; a fallback elsewhere
