"""`Sandbox.create()` + first `run_code("1+1")` through the official code-interpreter SDK against
`kernelbox serve`, on warm-pool hits: p50 / p99 (see BENCHMARKS.md).

    ~/.kernelbox/sdk/python/bin/python tests/sdk/bench/sandbox_create.py --url http://127.0.0.1:3000 --key e2b_...

Between samples it waits for serve's pool to refill (3 s), so each create is a hit. `--runs N`
(default 20).
"""

import argparse
import os
import time


def percentile(sorted_ms, p):
    return sorted_ms[min(len(sorted_ms) - 1, round((len(sorted_ms) - 1) * p))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    os.environ.update(E2B_API_URL=args.url, E2B_SANDBOX_URL=args.url, E2B_API_KEY=args.key)
    from importlib.metadata import version

    from e2b_code_interpreter import Sandbox

    create, first, kill = [], [], []
    for _ in range(args.runs):
        time.sleep(3)
        t = time.perf_counter()
        sbx = Sandbox.create()
        created = time.perf_counter()
        assert sbx.run_code("1+1").text == "2"
        done = time.perf_counter()
        sbx.kill()
        killed = time.perf_counter()
        create.append((created - t) * 1000)
        first.append((done - t) * 1000)
        kill.append((killed - done) * 1000)
    print(
        f"e2b-code-interpreter {version('e2b-code-interpreter')} (e2b {version('e2b')}), "
        f"{args.runs} samples, warm-pool hits\n"
    )
    print("| measure (client: Python SDK) | n | p50 ms | p99 ms | mean ms |")
    print("|---|---|---|---|---|")
    for name, xs in [
        ("Sandbox.create()", create),
        ('Sandbox.create() + run_code("1+1")', first),
        ("sbx.kill()", kill),
    ]:
        xs.sort()
        print(
            f"| {name} | {len(xs)} | {percentile(xs, 0.5):.1f} | {percentile(xs, 0.99):.1f} "
            f"| {sum(xs) / len(xs):.1f} |"
        )


if __name__ == "__main__":
    main()
