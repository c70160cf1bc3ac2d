"""`sandbox.commands.run("true")` through the official Python SDK: p50 / p99 (see BENCHMARKS.md).

The SDK runs every command as `/bin/bash -l -c CMD` (a login shell) and waits for the end of the
`Process.Start` stream. For scale, `/bin/true` started by Python's `subprocess` is timed too (the
cost of one fork and exec from Python; the agent's login shell also reads the profile files).

    ~/.kernelbox/sdk/python/bin/python tests/sdk/bench/commands_run.py --agent $CARGO_TARGET_DIR/release/kernelbox
    ~/.kernelbox/sdk/python/bin/python tests/sdk/bench/commands_run.py --url http://127.0.0.1:PORT

`--agent` starts that agent (no kernels, a temporary workdir) and stops it at the end; `--url`
(or `KERNELBOX_URL`) uses one already running. `--runs N` (default 200) after 20 warm-up runs.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

# Debug mode never calls the control plane; should anything try, it goes to a closed port.
os.environ["E2B_API_URL"] = "http://127.0.0.1:9"
os.environ.pop("E2B_API_KEY", None)

from importlib.metadata import version  # noqa: E402

from e2b import Sandbox  # noqa: E402


def percentile(sorted_ms, p):
    return sorted_ms[min(len(sorted_ms) - 1, round((len(sorted_ms) - 1) * p))]


def timed(runs, f):
    for _ in range(20):
        f()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        out.append((time.perf_counter() - t) * 1000)
    return sorted(out)


def start_agent(binary, workdir):
    agent = subprocess.Popen(
        [binary, "agent", "--addr", "127.0.0.1", "--port", "0", "--envd-port", "0",
         "--workdir", workdir, "--default-languages", ""],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "RUST_LOG": "kernelbox=warn"},
    )
    for line in agent.stdout:
        if "listening on " in line:
            return agent, line.split("listening on ")[1].strip()
    agent.wait()
    sys.exit("the agent did not start")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=os.environ.get("KERNELBOX_URL"))
    ap.add_argument("--agent", help="start this kernelbox binary instead of using --url")
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    agent = workdir = None
    if args.agent:
        workdir = tempfile.mkdtemp(prefix="kernelbox-bench-sdk-")
        agent, args.url = start_agent(args.agent, workdir)
    if not args.url:
        sys.exit("give --agent PATH or --url URL (or set KERNELBOX_URL)")
    try:
        sbx = Sandbox.create(debug=True, sandbox_url=args.url)

        def run():
            r = sbx.commands.run("true")
            assert r.exit_code == 0, r

        sdk = timed(args.runs, run)
        spawn = timed(args.runs, lambda: subprocess.run(["/bin/true"], check=True))
    finally:
        if agent:
            agent.terminate()
            agent.wait()
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"commands.run('true'), Python SDK e2b {version('e2b')}, "
          f"{args.runs} runs after 20 warm-up, 1-minute load before {load:.2f}")
    print()
    print("| measure | n | p50 ms | p99 ms | mean ms |")
    print("|---|---|---|---|---|")
    for name, v in [("sandbox.commands.run('true') (Python SDK, debug mode)", sdk),
                    ("/bin/true from Python's subprocess (for scale)", spawn)]:
        print(f"| {name} | {len(v)} | {percentile(v, 0.5):.2f} | {percentile(v, 0.99):.2f} | "
              f"{sum(v) / len(v):.2f} |")


if __name__ == "__main__":
    main()
