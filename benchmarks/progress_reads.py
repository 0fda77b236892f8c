"""What reading the heads' progress costs the operator, for 100 and 1000 running jobs.

Not a test: it measures. A child process plays N heads, each an HTTP server on its own loopback address
(127.77.x.y, port 9400, answering /progress as a driver does, with a new iteration on every read); this process runs
the operator's ProgressReader over N jobs at the given interval, its status writes answered by an in-process stand-in
of the API server's status endpoint (what writes cost the API server is the operator benchmark's, not this one's).
For each N it prints, one figure per line: reads per second against the ideal N/interval, the operator process's
CPU milliseconds per read, its CPU share of one core, and the oldest progress a job showed (seconds since its last
read, at the end) as a ratio to the interval. Per-read CPU at 1000 jobs over that at 100 is the "flat cost" ratio.

    .venv/bin/python benchmarks/progress_reads.py                      # 100 and 1000 jobs, 10 s interval, 60 s each
    .venv/bin/python benchmarks/progress_reads.py --jobs 1000 --seconds 120
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from pong_time_to_reward import cpu_model

from rljob.api import constants as c
from rljob.controller.observe import PodObservation
from rljob.controller.progress import ProgressReader, ProgressSettings


def address(i: int) -> str:
    return f"127.77.{i // 250}.{i % 250 + 1}"


HEADS = r'''
import asyncio, json, sys
from aiohttp import web
n = int(sys.argv[1]); addresses = [f"127.77.{i // 250}.{i % 250 + 1}" for i in range(n)]
async def main():
    counts = {}
    async def progress(request):
        host = request.transport.get_extra_info("sockname")[0]
        counts[host] = counts.get(host, 0) + 1
        return web.json_response({"attempt": 1, "iteration": counts[host], "envSteps": 4096 * counts[host],
                                  "episodeReturnMean": -20.5, "envStepsPerSecond": 700.0, "timeTotalSeconds": 5.0 * counts[host],
                                  "updateTime": "2026-12-07T08:00:00Z"})
    app = web.Application(); app.router.add_get("/progress", progress)
    runner = web.AppRunner(app, access_log=None); await runner.setup()
    for a in addresses:
        await web.TCPSite(runner, a, 9400).start()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
'''


class StatusEndpoint:
    """Answers the reader's status merge patches as the API server would: the job with the patched progress."""

    def __init__(self, jobs: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.jobs, self.writes = jobs, 0

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.writes += 1
        name = path.rsplit("/", 2)[-2]
        body = self.jobs[("bench", name)]
        return {**body, "status": {**body["status"], "progress": patch["status"]["progress"]}}


async def measure(n: int, interval: float, seconds: float) -> dict[str, float]:
    jobs = {("bench", f"job-{i}"): {"metadata": {"namespace": "bench", "name": f"job-{i}", "uid": f"u{i}"},
                                     "status": {"attempts": 1}} for i in range(n)}
    heads = {("bench", f"job-{i}"): [PodObservation(f"job-{i}-head-1", c.ROLE_HEAD, 1, "Running", ip=address(i),
                                                    controller_uid=f"u{i}")] for i in range(n)}
    api = StatusEndpoint(jobs)
    last_read: dict[tuple[str, str], float] = {}

    def store(body: dict[str, Any]) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        jobs[key] = body
        last_read[key] = time.monotonic()

    reader = ProgressReader(api, jobs, lambda key: heads[key], store, ProgressSettings(interval_seconds=interval))  # type: ignore[arg-type]
    reader.start()
    await asyncio.sleep(interval * 1.5)  # the first round (spread over a second) and one full interval
    reads0, cpu0, t0 = reader.reads, time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    reads, cpu, wall = reader.reads - reads0, time.process_time() - cpu0, time.monotonic() - t0
    now = time.monotonic()
    oldest = max(now - last_read.get(key, 0.0) for key in jobs)
    await reader.stop()
    return {"reads_per_s": reads / wall, "ideal": n / interval, "cpu_ms_per_read": 1000 * cpu / max(reads, 1),
            "cpu_share": cpu / wall, "failures": reader.failures, "oldest_ratio": oldest / interval}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, action="append", help="jobs (repeatable; default 100 and 1000)")
    p.add_argument("--interval", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=60.0)
    args = p.parse_args()
    sizes = args.jobs or [100, 1000]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * max(sizes) + 256)), hard))
    print(f"# machine: {cpu_model()}, {os.cpu_count()} CPUs; interval {args.interval:.0f} s, {args.seconds:.0f} s measured")
    per_read: dict[int, float] = {}
    for n in sizes:
        heads = subprocess.Popen([sys.executable, "-c", HEADS, str(n)], stdout=subprocess.PIPE, text=True)
        try:
            assert heads.stdout is not None and heads.stdout.readline().strip() == "ready"
            r = asyncio.run(measure(n, args.interval, args.seconds))
        finally:
            heads.kill()
            heads.wait()
        per_read[n] = r["cpu_ms_per_read"]
        print(f"{n} jobs: reads/s {r['reads_per_s']:.1f} = {r['reads_per_s'] / r['ideal']:.2f}x the ideal {r['ideal']:.1f}")
        print(f"{n} jobs: operator CPU per read {r['cpu_ms_per_read']:.2f} ms; CPU share {100 * r['cpu_share']:.1f} % of a core")
        print(f"{n} jobs: oldest progress at the end {r['oldest_ratio']:.2f}x the interval; failed reads {r['failures']}")
    if len(per_read) > 1:
        small, large = min(per_read), max(per_read)
        print(f"CPU per read, {large} jobs over {small}: {per_read[large] / per_read[small]:.2f}x")
    print(json.dumps({"cpu_ms_per_read": per_read}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
