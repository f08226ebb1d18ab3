"""Raw signing throughput of the key a running server signs with, measured in this process.

The key is loaded from the server's own key store, so the rate is that of the same key material
and algorithm; the loop runs on the server's CPU while the server is idle, and awaits
`Signer.sign` exactly as the minting path does.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop

from bench.cpustat import Interference
from bench.errors import BenchError
from bench.machine import pinned
from keys.file_store import FileKeyStore
from keys.protocols import Signer

__all__ = ["SignResult", "measure_sign_rate"]


@dataclass(frozen=True, slots=True)
class SignResult:
    name: str
    kid: str
    alg: str
    payload_bytes: int
    signatures: int
    seconds: float
    interference: Interference | None = None  # others' use of the CPUs meanwhile

    @property
    def rate(self) -> float:
        return self.signatures / self.seconds


def measure_sign_rate(
    name: str,
    keys_dir: Path,
    signing_input: bytes,
    *,
    seconds: float,
    warmup: float,
    cpu: int | None,
    expect_kid: str,
) -> SignResult:
    """Sign `signing_input` with the active key in `keys_dir` for `seconds` (after `warmup`);
    raises BenchError when the active key is not `expect_kid` (the key the server minted with)."""
    with pinned(cpu), asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        signer = runner.run(_active_signer(keys_dir))
        if signer.kid != expect_kid:
            raise BenchError(
                f"{keys_dir} signs with {signer.kid} but the server minted with {expect_kid}"
            )
        if warmup > 0:
            runner.run(_sign_for(signer, signing_input, warmup))
        signatures, elapsed = runner.run(_sign_for(signer, signing_input, seconds))
    return SignResult(
        name=name,
        kid=signer.kid,
        alg=signer.alg.value,
        payload_bytes=len(signing_input),
        signatures=signatures,
        seconds=elapsed,
    )


async def _active_signer(keys_dir: Path) -> Signer:
    snapshot = await FileKeyStore(keys_dir).load()
    active = snapshot.active()
    if active is None or active.kid not in snapshot.signers:
        raise BenchError(f"the key store {keys_dir} has no active signing key")
    return snapshot.signers[active.kid]


async def _sign_for(signer: Signer, signing_input: bytes, seconds: float) -> tuple[int, float]:
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        await signer.sign(signing_input)
        count += 1
        now = time.perf_counter()
        if now >= deadline:
            return count, now - start
