"""Helpers that read Linux's /proc files, using the standard library only.

The cold-start child imports this module before it times fxlazy's first call, so it must
not load anything that the call could import.
"""

from __future__ import annotations


def read_proc_field(path: str, field_name: str) -> str | None:
    """Return the value of ``field_name`` in a ``name: value`` file such as /proc/meminfo, or None."""
    try:
        with open(path) as file:
            for line in file:
                name, _, value = line.partition(":")
                if name.strip() == field_name:
                    return value.strip()
    except OSError:
        return None
    return None


def peak_rss_kib() -> int:
    """Return this process's peak resident set size in KiB, read from VmHWM in /proc/self/status.

    ru_maxrss from resource.getrusage would be the usual source, but Linux keeps it across
    execve (getrusage(2)). A subprocess that the benchmark starts after the timing stage
    would then report the benchmark's own peak, which is gigabytes after the large models.
    VmHWM covers only the subprocess's own address space, which starts empty at execve.
    """
    value = read_proc_field("/proc/self/status", "VmHWM")
    if value is None:
        raise RuntimeError(
            "VmHWM is missing from /proc/self/status. The memory and cold-start stages need "
            "Linux's procfs, so leave them out of --stages on this system."
        )
    return int(value.split()[0])
