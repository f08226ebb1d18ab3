"""Where each process runs (CPU pinning) and the facts about the machine that go in a report.

On a small machine the load generator and the server compete for cores; pinning the server to
one CPU and wrk to another keeps them apart and makes numbers repeatable. Only one server is under
load at a time, so every server shares the server CPU.
"""

from __future__ import annotations

import ctypes
import os
import platform
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

# prctl(2) option: the kernel sends the child this signal when its parent dies, so a benchmark
# killed with SIGKILL still takes its servers down with it.
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class CpuPlan:
    """CPUs for the server under load and for the load generator; None means not pinned."""

    server: int | None
    loadgen: int | None

    @classmethod
    def detect(cls) -> CpuPlan:
        """The first two CPUs this process may use; no pinning on a single-CPU machine."""
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return cls(server=None, loadgen=None)
        return cls(server=cpus[0], loadgen=cpus[1])

    def describe(self) -> str:
        if self.server is None:
            return "not pinned (fewer than 2 CPUs available)"
        return f"server on CPU {self.server}, wrk on CPU {self.loadgen}"


def child_setup(cpu: int | None) -> Callable[[], None]:
    """A `preexec_fn`: pin the child to `cpu` and have it terminated when we die."""

    def setup() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        _die_with_parent()

    return setup


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the try/finally in the parent is the only cleanup


@contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Run this process on `cpu` for the duration of the block (for in-process measurements)."""
    if cpu is None:
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def facts(wrk_version: str, cpus: CpuPlan) -> dict[str, str]:
    """What a reader needs to compare two reports."""
    return {
        "cpu_count": str(os.cpu_count() or 0),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": wrk_version,
        "uvicorn": _version("uvicorn"),
        "uvloop": _version("uvloop"),
        "httptools": _version("httptools"),
        "starlette": _version("starlette"),
        "cryptography": _version("cryptography"),
        "pinning": cpus.describe(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"
