"""Runs as the agent inside a sandbox: unmodified boto3 with only the environment Warrant handed
out, calling sts:GetCallerIdentity every INTERVAL seconds for DURATION seconds.

    python sdk_client.py DURATION INTERVAL [--wait-for-go]

Prints one JSON line per call: {"arn", "access_key"}, or {"error"} when the call failed (boto3's
container provider has already retried by then: three attempts, a second apart). With
--wait-for-go it prints {"ready": true} once boto3 is imported and waits for a line on stdin
before it first asks for credentials, so a test can time that first request; a number on that
line replaces DURATION. SIGTERM ends it after the call in progress, with exit status 0.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Any

import boto3  # type: ignore[import-untyped]


def main() -> None:
    duration, interval = float(sys.argv[1]), float(sys.argv[2])
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    session = boto3.Session()
    if "--wait-for-go" in sys.argv[3:]:
        print(json.dumps({"ready": True}), flush=True)
        go = sys.stdin.readline().strip()
        duration = float(go) if go else duration
    end = time.monotonic() + duration
    sts: Any = None
    while True:
        try:
            if sts is None:  # botocore resolves credentials when it builds the client
                sts = session.client("sts")
            identity = sts.get_caller_identity()
            frozen = session.get_credentials().get_frozen_credentials()
            line = {"arn": identity["Arn"], "access_key": frozen.access_key}
        except Exception as exc:  # every failure is reported, none ends the loop
            line = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(line), flush=True)
        if time.monotonic() >= end or stopping:
            break
        time.sleep(interval)


if __name__ == "__main__":
    main()
