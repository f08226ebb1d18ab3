"""Runs as the agent inside a sandbox: unmodified boto3 with only the environment Warrant handed
out. Calls sts:GetCallerIdentity every INTERVAL seconds for DURATION seconds and prints one JSON
line per call (or per error)."""

from __future__ import annotations

import json
import sys
import time

import boto3  # type: ignore[import-untyped]


def main() -> None:
    duration, interval = float(sys.argv[1]), float(sys.argv[2])
    session = boto3.Session()
    sts = session.client("sts")
    end = time.monotonic() + duration
    while True:
        try:
            identity = sts.get_caller_identity()
            frozen = session.get_credentials().get_frozen_credentials()
            print(
                json.dumps(
                    {
                        "arn": identity["Arn"],
                        "account": identity["Account"],
                        "access_key": frozen.access_key,
                    }
                ),
                flush=True,
            )
        except Exception as exc:
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        if time.monotonic() >= end:
            break
        time.sleep(interval)


if __name__ == "__main__":
    main()
