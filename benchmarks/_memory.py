"""Peak-memory helpers shared by the benchmarks (Linux /proc; CPU resident set size)."""

from __future__ import annotations


def status_kb(field: str) -> int:
    """A memory line of /proc/self/status in kB (VmRSS: current RSS, VmHWM: peak RSS)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False
