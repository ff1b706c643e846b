"""The memory a process can still take, and a clear ``MemoryError`` before a model
asks for more than that (instead of the operating system's out-of-memory killer)."""

from __future__ import annotations

#: cgroup (v2, then v1) files of the memory limit and the memory in use.
_CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                  "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def available_bytes() -> int | None:
    """Bytes this process can still allocate: Linux's ``MemAvailable``, lowered to the
    room left under the cgroup's memory limit where one is set; None where neither
    is known (then nothing is refused)."""
    avail = None
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemAvailable:"):
            avail = int(line.split()[1]) * 1024
    for limit_path, usage_path in _CGROUP_FILES:
        limit, usage = _read(limit_path), _read(usage_path)
        if limit is None or usage is None:
            continue
        limit = limit.strip()
        if limit != "max" and int(limit) < 1 << 60:
            room = max(int(limit) - int(usage), 0)
            avail = room if avail is None else min(avail, room)
        break
    return avail


def _size(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def ensure(need: int, what: str) -> None:
    """Raise ``MemoryError`` naming ``what``, ``need`` bytes and the bytes available
    when they do not fit (before anything is allocated)."""
    avail = available_bytes()
    if avail is not None and need > avail:
        raise MemoryError(f"{what}: {_size(need)} ({need:,} bytes) needed, but only "
                          f"{_size(avail)} ({avail:,} bytes) of memory is available")
