"""Processes as /proc tells of them: a process's descendants, its resident memory, its
threads' CPU time and its open files. Used by the tests (workers below the master, memory
growth, files closed) and by bench/ (peak RSS of a server)."""

from __future__ import annotations

import os


def listing(path: str) -> list[str]:
    """The names in a /proc directory; none when its process has gone."""
    try:
        return os.listdir(path)
    except OSError:
        return []


def tree_pids(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:  # exited while we looked
            continue
        # The command name may contain spaces and parens: split after it.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def rss_kib(pid: int) -> int | None:
    """One process's VmRSS in KiB; None when it has gone (or has no memory of its own)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") // 1024


def open_paths(pid: int) -> set[str]:
    """What `pid` and its descendants have open, as their descriptors' links name it."""
    found = set()
    for p in tree_pids(pid):
        for fd in listing(f"/proc/{p}/fd"):
            try:
                found.add(os.readlink(f"/proc/{p}/fd/{fd}"))
            except OSError:
                pass
    return found


def thread_cpu_seconds(pid: int, name: str) -> float:
    """CPU time (user + system) of the threads called `name` in `pid` and its descendants."""
    ticks = 0
    for p in tree_pids(pid):
        for tid in listing(f"/proc/{p}/task"):
            try:
                with open(f"/proc/{p}/task/{tid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            if comm == name:
                fields = stat.rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")
