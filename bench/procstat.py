"""CPU time and resident memory of a process tree, from /proc (Linux only)."""

from __future__ import annotations

import os
import threading
import time

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces: split after its closing parenthesis
    return text[text.rindex(")") + 2:].split()


def tree(root: int) -> list[int]:
    """``root`` and all its descendants alive now."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat(int(name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(root: int) -> float:
    """utime + stime of the tree (live processes; reaped children's time is in cutime/cstime)."""
    total = 0
    for pid in tree(root):
        fields = _stat(pid)
        if fields is not None:  # fields[11..14] = utime, stime, cutime, cstime
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / _TICK


def cpu_split(root: int) -> tuple[float, float, int]:
    """User seconds, system seconds and minor page faults of the tree's live processes (the kernel's
    share shows page faults and memory mapping; faults count pages first touched)."""
    user = system = faults = 0
    for pid in tree(root):
        fields = _stat(pid)
        if fields is not None:  # fields[7] = minflt, [11] = utime, [12] = stime
            faults += int(fields[7])
            user += int(fields[11])
            system += int(fields[12])
    return user / _TICK, system / _TICK, faults


def rss_bytes(root: int) -> int:
    """Sum of the tree's resident set sizes (VmRSS)."""
    total = 0
    for pid in tree(root):
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


class PeakRss:
    """Samples a tree's RSS every ``interval`` seconds in a thread; ``peak`` is the largest seen."""

    def __init__(self, root: int, interval: float = 0.1) -> None:
        self.root, self.interval, self.peak = root, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.root))
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.root))
