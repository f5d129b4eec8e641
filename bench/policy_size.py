"""How a large policy fares in the budgeted worker processes (docs/performance.md, "Policy
size"): compiling it in the server (upload), its first evaluation in a new worker (which
compiles it there), then warm evaluations, each within the evaluation budget.

    python -m bench.policy_size [FILE.rego] [--input FILE.json] [--rules N]

Without FILE, a policy of N one-line rules (default 2,914, ~256 KiB: the walkthrough's
`huge.rego`) is generated."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from quartermaster.policy.engine import CompiledPolicy, InputBatch, PolicyRuntimeError
from quartermaster.policy.sandbox import PolicySandbox


def generated(rules: int) -> str:
    lines = ["package acme.publish.huge", "import rego.v1"]
    lines += [
        f'deny contains "rule {n} fired: tag banned-{n}" if "banned-{n}" in input.manifest.tags'
        for n in range(rules)
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file", nargs="?")
    parser.add_argument("--input")
    parser.add_argument("--rules", type=int, default=2914)
    parser.add_argument("--warm", type=int, default=5)
    args = parser.parse_args(argv)
    source = Path(args.file).read_text() if args.file else generated(args.rules)
    document = (
        json.loads(Path(args.input).read_text())
        if args.input
        else {"point": "publish", "manifest": {"app_id": "a1", "tags": ["banned-2"]}}
    )
    print(f"policy: {len(source.encode())} bytes; load {os.getloadavg()[0]:.1f}")
    started = time.perf_counter()
    compiled = CompiledPolicy(source, checked=False)
    print(f"compile in the server (upload): {time.perf_counter() - started:.2f} s")
    # The floor: the same compiled policy queried in this process, no worker, no budget.
    floor_times = []
    for _ in range(max(args.warm, 1)):
        started = time.perf_counter()
        InputBatch(document).evaluate(compiled)
        floor_times.append(time.perf_counter() - started)
    floor = statistics.median(floor_times)
    print(f"floor: the bare in-process query, median {floor:.3f} s")
    sandbox = PolicySandbox()
    try:
        for attempt in ("first (new worker)", *[f"warm {n + 1}" for n in range(args.warm)]):
            started = time.perf_counter()
            try:
                verdict = sandbox.evaluate("bench", "huge", source, document, tenant="bench")
                outcome = f"{verdict.result} {verdict.deny[:1]}"
            except PolicyRuntimeError as exc:
                outcome = f"failed: {exc}"
            print(f"{attempt}: {time.perf_counter() - started:.2f} s, {outcome}")
        times = []
        for _ in range(args.warm):
            started = time.perf_counter()
            sandbox.evaluate("bench", "huge", source, document, tenant="bench")
            times.append(time.perf_counter() - started)
        if times:
            warm = statistics.median(times)
            print(
                f"warm median {warm:.3f} s; floor / warm = {floor / warm:.2f}; "
                f"load {os.getloadavg()[0]:.1f}"
            )
    except PolicyRuntimeError as exc:
        print(f"failed: {exc}")
    finally:
        sandbox.close()


if __name__ == "__main__":
    main()
