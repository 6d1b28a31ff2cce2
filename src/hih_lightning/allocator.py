"""glibc malloc settings for training on a CPU.

A CPU training step allocates and frees the same large activation buffers every step
(megabytes each; PyTorch has no caching allocator on the CPU). With glibc's defaults most
of them are mmap-ed and unmapped, or trimmed off the heap top when freed, so every step
faults in and zeroes fresh pages: about 50,000 a step for the main job (128 px, batch 16),
5 % of its step time and 3 % of its wall time on the 2-core development VM
(``experiments/README.md``). Keeping freed memory in the heap removes that work; the process
keeps its peak heap, which training reaches every step anyway.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

# mallopt() parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# The largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2); larger blocks
# are always mmap-ed.
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**31 - 1  # never trim the heap top after a step


def keep_freed_memory() -> bool:
    """Make glibc reuse freed blocks up to :data:`MMAP_THRESHOLD` and never trim the heap.

    Returns whether the settings were applied: not on other C libraries (musl, macOS,
    Windows), nor when the user chose malloc settings through ``GLIBC_TUNABLES``.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        log.info("GLIBC_TUNABLES sets malloc options: leaving them as they are")
        return False
    libc = ctypes.CDLL(None)  # the running process, with the glibc it is linked against
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
