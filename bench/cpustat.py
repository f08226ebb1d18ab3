"""How much of the pinned CPUs something else used during a load run.

A benchmark shares its machine with editors, test suites and, on a VM, other tenants. The figures
are only comparable when the server and wrk had their CPUs to themselves, so every load run
reports the share of each pinned CPU that went to other processes (and to the hypervisor).
Linux only; elsewhere nothing is measured and the report says so.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NOISY_PCT", "CpuMeter", "Interference"]

# Above this share of a pinned CPU taken by others, a run's rate is not comparable with another's.
NOISY_PCT = 5.0

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
# /proc/stat per-CPU columns: user nice system idle iowait irq softirq steal ...
_USER, _NICE, _SYSTEM, _STEAL = 0, 1, 2, 7
# /proc/<pid>/stat fields after "(comm) ": state is 0, utime 11, stime 12.
_UTIME, _STIME = 11, 12


@dataclass(frozen=True, slots=True)
class Interference:
    """Percent of one CPU's wall time used by others (processes, or the hypervisor as steal);
    `loadgen_cpu_pct` is None when no load generator ran (an in-process measurement)."""

    server_cpu_pct: float
    loadgen_cpu_pct: float | None

    @property
    def worst_pct(self) -> float:
        return max(self.server_cpu_pct, self.loadgen_cpu_pct or 0.0)

    def describe(self) -> str:
        loadgen = "-" if self.loadgen_cpu_pct is None else f"{self.loadgen_cpu_pct:g}"
        return f"{self.server_cpu_pct:g}/{loadgen}"


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float
    cpus: dict[int, tuple[int, int]]  # cpu -> (user+nice+system ticks, steal ticks)
    server_ticks: int
    loadgen_seconds: float  # CPU time of the load generator (finished children, or a live pid)


class CpuMeter:
    """Measure around one run: `start()` before, `stop()` after wrk (if any) has exited.

    `pid` is the process doing the measured work on `server_cpu`; `loadgen_cpu` is wrk's CPU,
    None when there is no wrk. The load generator's own CPU time is that of our finished
    children (wrk, the open-loop generator), or, with `loadgen_pid`, that of a live process (this
    one, when the client and the stand-in run in the benchmark itself)."""

    def __init__(
        self,
        pid: int,
        server_cpu: int | None,
        loadgen_cpu: int | None,
        *,
        loadgen_pid: int | None = None,
    ) -> None:
        self._pid = pid
        self._server_cpu = server_cpu
        self._loadgen_cpu = loadgen_cpu
        self._loadgen_pid = loadgen_pid
        self._start: _Sample | None = None

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> Interference | None:
        """None when CPUs are not pinned or /proc cannot be read."""
        start, end = self._start, self._sample()
        if start is None or end is None or self._server_cpu is None:
            return None
        wall_ticks = (end.at - start.at) * _TICKS_PER_SECOND
        if wall_ticks <= 0:
            return None
        server_ticks = end.server_ticks - start.server_ticks
        wrk_ticks = (end.loadgen_seconds - start.loadgen_seconds) * _TICKS_PER_SECOND
        return Interference(
            server_cpu_pct=_others(self._server_cpu, start, end, server_ticks, wall_ticks),
            loadgen_cpu_pct=None
            if self._loadgen_cpu is None
            else _others(self._loadgen_cpu, start, end, wrk_ticks, wall_ticks),
        )

    def _sample(self) -> _Sample | None:
        try:
            return _Sample(
                at=time.monotonic(),
                cpus=_cpu_ticks(),
                server_ticks=_process_ticks(self._pid),
                loadgen_seconds=_children_seconds()
                if self._loadgen_pid is None
                else _process_ticks(self._loadgen_pid) / _TICKS_PER_SECOND,
            )
        except (OSError, ValueError, IndexError):
            return None


def _others(cpu: int, start: _Sample, end: _Sample, ours: float, wall_ticks: float) -> float:
    """Percent of `cpu` used by anything but `ours`; kernel network work (irq, softirq) is
    the load itself and is not counted."""
    busy = end.cpus[cpu][0] - start.cpus[cpu][0]
    steal = end.cpus[cpu][1] - start.cpus[cpu][1]
    return round(100 * (max(0.0, busy - ours) + steal) / wall_ticks, 1)


def _cpu_ticks() -> dict[int, tuple[int, int]]:
    ticks: dict[int, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text(encoding="ascii").splitlines():
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit():
            values = [int(v) for v in rest.split()]
            ticks[int(name[3:])] = (values[_USER] + values[_NICE] + values[_SYSTEM], values[_STEAL])
    return ticks


def _process_ticks(pid: int) -> int:
    """User + system ticks of every thread of `pid`."""
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    fields = stat.rpartition(")")[2].split()
    return int(fields[_UTIME]) + int(fields[_STIME])


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
