"""Serving-speed benchmark: the service against its HTTP floors and its compute floor, in one run.

For each data set (ADBench .npz, features x0..x{d-1}):

1. the service: `vae-anomaly serve MODEL` once per `--variant` (`VAE_ANOMALY_*` variables pass
   through; `--env NAME=VALUE` adds some to every variant) with a model trained on the data set's
   normal rows (`vae-anomaly train`, cached in `--models`). `--before REF` adds the service as it is
   at git REF (`git archive`, served from that tree through `PYTHONPATH`), on the pure-Python stack
   (h11 + asyncio: httptools and uvloop hidden, as in an install without them) and on httptools;
2. the HTTP floors: `bench.http_floor`, a FastAPI app that parses the same JSON and answers the same
   shape without a model, under uvicorn on each stack of `--floor-stacks` (httptools + uvloop, h11 +
   asyncio): a service variant is compared with the floor on its own stack;
3. the compute floor: `Detector.score` on already-checked columns, in this process (no HTTP), with
   batches of 1, 64, 256 and 4096 records, and `Detector.score_results` (scores and `top_features`,
   what `/score` returns) on the same batches.

Load comes from wrk (Debian's `wrk` 4.1, one thread, a Lua script that cycles through pre-built
bodies) in its own process; single-record `/score` at concurrency 1, 16 and 64, and batches of 256
and 4096 records at concurrency 1. Each measurement follows a warm-up of the same load. Server RSS
(each worker's, with `VAE_ANOMALY_WORKERS=N`) is read from /proc after the warm-up of the first
scenario; the load average is recorded at the start and end of each server's runs.

    python -m bench.serving ../shared/datasets/adbench/6_cardio.npz ../shared/datasets/adbench/22_magic.gamma.npz
    python -m bench.serving DATA.npz --quick --out /tmp/serving.json     # 3 s per scenario instead of 10
    python -m bench.serving DATA.npz --env VAE_ANOMALY_MICRO_BATCH=false  # a service setting for this run
    python -m bench.serving DATA.npz --before main --variant after --variant after-h11:VAE_ANOMALY_HTTP_STACK=h11 \
        --variant workers2:VAE_ANOMALY_WORKERS=2

`--variant NAME[:VAR=VALUE,...]` (repeatable) runs the service once per variant with those variables,
all against the same floors in the same run.

Goals (issue 15), the first table's columns: single records at concurrency 64 ≥ 80% of the HTTP
floor's requests/s on the same stack, beside the requests/s per core (Ray Serve documents ~400–500
no-op requests/s per core); batches of 4096 ≥ 60% of the compute floor's records/s;
`VAE_ANOMALY_WORKERS=2` ≥ 1.6× one worker's requests/s; p99 at concurrency 16 ≤ 4× its p50; RSS per
worker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SINGLE_CONCURRENCY = (1, 16, 64)
BATCH_SIZES = (256, 4096)
COMPUTE_BATCHES = (1, 64, 256, 4096)
DISTINCT_SINGLE_BODIES = 1000
STACKS = ("httptools", "h11")
FLOOR_STACK = {"httptools": ["--http", "httptools", "--loop", "uvloop"], "h11": ["--http", "h11", "--loop", "asyncio"]}
RAY_SERVE_PER_CORE = "400–500"
"""Ray Serve's documented no-op throughput per CPU core (requests/s), for scale."""
PURE_STACK_SHIM = "pure-stack"
HIDDEN_PACKAGE = 'raise ImportError("hidden by bench.serving: the pure-Python stack (h11 + asyncio)")\n'

WRK_SCRIPT = r"""
local requests = {}
local n = 0
local i = 0

init = function(args)
  local headers = {["Content-Type"] = "application/json"}
  for line in io.lines(os.getenv("BENCH_BODIES")) do
    n = n + 1
    requests[n] = wrk.format("POST", "/score", headers, line)
  end
end

request = function()
  i = i % n + 1
  return requests[i]
end

done = function(summary, latency, requests)
  local out = io.open(os.getenv("BENCH_RESULT"), "w")
  local e = summary.errors
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, "p50_us": %d, "p99_us": %d}',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
  out:close()
end
"""


def say(text: str = "") -> None:
    print(text, flush=True)


def dataset_name(path: Path) -> str:
    """'6_cardio.npz' → 'cardio' (ADBench's number prefix dropped)."""
    prefix, sep, rest = path.stem.partition("_")
    return rest if sep and prefix.isdigit() else path.stem


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB (VmRSS from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker_pids(pid: int) -> list[int]:
    """uvicorn's worker processes under the supervisor `pid` (children started by multiprocessing's
    spawn, not its resource tracker), or `pid` itself when it has none (one worker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = []
    for child in children.read_text().split() if children.exists() else []:
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
    return found or [pid]


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# -- bodies -------------------------------------------------------------------------------------


def load_rows(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        return np.asarray(data["X"], dtype=np.float64)


def records_of(rows: np.ndarray) -> list[dict[str, float]]:
    names = [f"x{j}" for j in range(rows.shape[1])]
    return [dict(zip(names, row, strict=True)) for row in rows.tolist()]


def write_bodies(directory: Path, rows: np.ndarray, seed: int = 0) -> dict[str, Path]:
    """One JSON body per line: distinct single-record bodies, and one body per batch size."""
    rng = np.random.default_rng(seed)
    files = {}
    singles = rows[rng.choice(len(rows), DISTINCT_SINGLE_BODIES, replace=len(rows) < DISTINCT_SINGLE_BODIES)]
    path = directory / "single.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps({"records": [r]}) for r in records_of(singles)) + b"\n")
    files["single"] = path
    for size in BATCH_SIZES:
        batch = rows[rng.choice(len(rows), size, replace=len(rows) < size)]
        path = directory / f"batch{size}.jsonl"
        path.write_bytes(orjson.dumps({"records": records_of(batch)}) + b"\n")
        files[f"batch{size}"] = path
    return files


# -- servers and load ---------------------------------------------------------------------------


def stop(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 15 s: a benchmarked server never outlives the run."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def running(command: list[str], port: int, env: dict[str, str], log: Path) -> Iterator[int]:
    """Start a server, wait for /readyz, yield its pid, stop it (SIGTERM, then SIGKILL)."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"error: server exited ({process.returncode}); see {log}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"error: server not ready after 120 s; see {log}")
                time.sleep(0.2)
            yield process.pid
        finally:
            stop(process)


def wrk(port: int, bodies: Path, connections: int, seconds: float, script: Path, workdir: Path) -> dict[str, Any]:
    """One wrk run (one thread); requests/s, p50 and p99 in ms, non-2xx and socket errors."""
    result = workdir / "wrk-result.json"
    env = {**os.environ, "BENCH_BODIES": str(bodies), "BENCH_RESULT": str(result)}
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "60s", "-s", str(script)]
    subprocess.run([*command, f"http://127.0.0.1:{port}/score"], env=env, check=True, capture_output=True)
    raw = json.loads(result.read_text())
    return {
        "requests": raw["requests"],
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "non_2xx": raw["non_2xx"],
        "socket_errors": raw["socket_errors"],
    }


def scenarios() -> list[tuple[str, str, int, int]]:
    """(name, body file key, records per request, connections)."""
    out = [(f"single c={c}", "single", 1, c) for c in SINGLE_CONCURRENCY]
    out += [(f"batch {size}", f"batch{size}", size, 1) for size in BATCH_SIZES]
    return out


def measure_server(
    command: list[str], port: int, env: dict[str, str], bodies: dict[str, Path], args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT)
    results: dict[str, Any] = {}
    results["load_average_before"] = os.getloadavg()
    with running(command, port, env, work / f"server-{port}.log") as pid:
        for index, (name, key, per_request, connections) in enumerate(scenarios()):
            wrk(port, bodies[key], connections, args.warmup, script, work)
            if index == 0:
                workers = worker_pids(pid)
                results["rss_mb"] = rss_mb(pid)
                results["worker_rss_mb"] = [rss_mb(w) for w in workers] if workers != [pid] else [results["rss_mb"]]
            run = wrk(port, bodies[key], connections, args.seconds, script, work)
            run["records_per_s"] = run["rps"] * per_request
            if run["non_2xx"] or run["socket_errors"]:
                say(f"  warning: {name}: {run['non_2xx']} non-2xx responses, {run['socket_errors']} socket errors")
            results[name] = run
            say(f"  {name:<12} {run['rps']:9.1f} req/s  p50 {run['p50_ms']:7.2f} ms  p99 {run['p99_ms']:7.2f} ms")
    results["load_average_after"] = os.getloadavg()
    return results


# -- compute floor ------------------------------------------------------------------------------


def compute_floor(model_dir: Path, rows: np.ndarray, seconds: float, threads: int | None) -> dict[str, Any]:
    """`Detector.score` on checked columns in this process, threaded as the service is: the model is
    loaded and warmed up on the main thread, then scored on a worker thread, with the threads the
    service gives one worker (`service.server.threads_per_worker`) unless `threads` says otherwise.

    With torch's default threads on this 2-core VM under other load, scoring one record on the
    thread that first used torch took 36 ms, on a later worker thread 0.56 ms (load 5.4); the server
    warms up on its main thread and scores on worker threads, so the floor does the same.
    """
    import torch

    from vae_anomaly.model.detector import Detector
    from vae_anomaly.service.server import threads_per_worker
    from vae_anomaly.service.settings import Settings

    torch.set_num_threads(threads or threads_per_worker(Settings(workers=1, torch_threads=None)))
    detector = Detector.load(model_dir, "cpu")
    detector.score(detector.kind.columns_from_records(detector.sample(4, seed=0)))
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(_compute_floor, detector, rows, seconds).result()


def _median_seconds(function: Any, seconds: float) -> tuple[int, float]:
    function()  # warm-up
    times = []
    started = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        function()
        times.append(time.perf_counter() - t0)
    return len(times), float(np.median(times))


def _compute_floor(detector: Any, rows: np.ndarray, seconds: float) -> dict[str, Any]:
    import torch

    rng = np.random.default_rng(1)
    out: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    for size in COMPUTE_BATCHES:
        batch = rows[rng.choice(len(rows), size, replace=len(rows) < size)]
        columns = detector.kind.columns_from_table({f"x{j}": batch[:, j] for j in range(batch.shape[1])})
        calls, median = _median_seconds(lambda columns=columns: detector.score(columns), seconds / 2)
        out[f"batch {size}"] = {"calls": calls, "median_ms": median * 1000, "records_per_s": size / median}
        calls, with_results = _median_seconds(lambda columns=columns: detector.score_results(columns, 3), seconds / 2)
        out[f"results {size}"] = {
            "calls": calls,
            "median_ms": with_results * 1000,
            "records_per_s": size / with_results,
        }
        say(
            f"  compute batch {size:<5} {size / median:11.0f} records/s  median {median * 1000:8.3f} ms; "
            f"with results (explain 3) {size / with_results:9.0f} records/s"
        )
    return out


# -- the run ------------------------------------------------------------------------------------


def ensure_model(npz: Path, models: Path) -> Path:
    directory = models / dataset_name(npz)
    if not (directory / "manifest.json").is_file():
        say(f"training {directory} (vae-anomaly train {npz})")
        command = [str(BIN / "vae-anomaly"), "train", str(npz), "--out", str(directory), "--quiet"]
        subprocess.run(command, check=True)
    return directory


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """'name:VAR=1,OTHER=2' → ('name', {'VAR': '1', 'OTHER': '2'})."""
    name, _, assignments = text.partition(":")
    return name, dict(item.split("=", 1) for item in assignments.split(",") if item)


def pure_stack_shim(directory: Path) -> Path:
    """A folder whose `httptools` and `uvloop` fail to import: first on a server's `PYTHONPATH`,
    uvicorn (and code that picks "whatever is installed") falls back to h11 and asyncio, as in an
    environment without them, which is how the service ran before issue 15."""
    shim = directory / PURE_STACK_SHIM
    for package in ("httptools", "uvloop"):
        (shim / package).mkdir(parents=True, exist_ok=True)
        (shim / package / "__init__.py").write_text(HIDDEN_PACKAGE)
    return shim


def before_variants(ref: str, directory: Path) -> list[tuple[str, dict[str, str]]]:
    """The service at git `ref` (its tree from `git archive`), on the pure-Python stack and on httptools."""
    tree = directory / "before"
    tree.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", ref], cwd=PROJECT_ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    shim = pure_stack_shim(directory)
    return [
        (f"before ({ref}) h11", {"PYTHONPATH": f"{tree}{os.pathsep}{shim}"}),
        (f"before ({ref}) httptools", {"PYTHONPATH": str(tree)}),
    ]


def stack_of(env: dict[str, str]) -> str:
    """The server stack a variant runs on: its `VAE_ANOMALY_HTTP_STACK`, h11 when the pure-stack
    shim is on its `PYTHONPATH`, else the service's own default (httptools when installed)."""
    chosen = env.get("VAE_ANOMALY_HTTP_STACK", "auto")
    if chosen != "auto":
        return chosen
    if PURE_STACK_SHIM in env.get("PYTHONPATH", "").split(os.pathsep)[-1]:
        return "h11"
    import importlib.util

    installed = all(importlib.util.find_spec(p) is not None for p in ("httptools", "uvloop"))
    return "httptools" if installed else "h11"


def run_dataset(npz: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    name = dataset_name(npz)
    model_dir = ensure_model(npz, args.models)
    rows = load_rows(npz)
    bodies = write_bodies(work, rows)
    env = {**os.environ, **dict(item.split("=", 1) for item in args.env)}
    if args.torch_threads:
        env["VAE_ANOMALY_TORCH_THREADS"] = str(args.torch_threads)
    result: dict[str, Any] = {
        "dataset": name,
        "features": rows.shape[1],
        "model_dir": str(model_dir),
        "service": {},
        "http_floor": {},
    }
    variants = before_variants(args.before, work) if args.before else []
    variants += [parse_variant(v) for v in args.variant or ([] if args.before else ["service"])]
    for label, extra in variants:
        stack = stack_of(extra)
        say(f"{name}: service {label} (vae-anomaly serve, stack {stack}) {extra or ''}")
        port = free_port()
        command = [str(BIN / "vae-anomaly"), "serve", str(model_dir), "--port", str(port), "--device", "cpu"]
        measured = measure_server(command, port, {**env, **extra}, bodies, args, work)
        result["service"][label] = {"env": extra, "stack": stack, **measured}

    for stack in args.floor_stacks:
        say(f"{name}: HTTP floor on {stack} (bench.http_floor, uvicorn {' '.join(FLOOR_STACK[stack])})")
        port = free_port()
        command = [
            str(BIN / "python"),
            "-m",
            "uvicorn",
            "bench.http_floor:create_app",
            "--factory",
            *FLOOR_STACK[stack],
        ]
        command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--log-level", "info"]
        result["http_floor"][stack] = measure_server(command, port, env, bodies, args, work)

    say(f"{name}: compute floor (Detector.score in-process)")
    result["compute_floor"] = compute_floor(model_dir, rows, args.seconds, args.torch_threads)
    return result


# -- tables -------------------------------------------------------------------------------------


def ratio(a: float, b: float) -> float:
    """a / b, NaN when b is 0 (a scenario in which no request finished)."""
    return a / b if b else float("nan")


def one_worker_twin(label: str, service: dict[str, Any]) -> str | None:
    """For a variant with `VAE_ANOMALY_WORKERS=N` (N > 1): the variant with the same variables
    otherwise (its one-worker twin), if the run has one."""
    env = service[label]["env"]
    if int(env.get("VAE_ANOMALY_WORKERS", "1")) <= 1:
        return None
    alone = {k: v for k, v in env.items() if k != "VAE_ANOMALY_WORKERS"}
    return next((other for other, s in service.items() if s["env"] == alone), None)


def goals_table(results: list[dict[str, Any]], machine_cores: int) -> str:
    """One row per data set and variant, one column per goal of issue 15 (its threshold in the header)."""
    lines = [
        "| data set | variant | stack | 1 record c=64 | HTTP floor c=64, same stack | ratio (goal ≥ 0.80) "
        f"| req/s per core (Ray Serve ~{RAY_SERVE_PER_CORE} no-op) | c=16 p50 / p99 | p99/p50 (goal ≤ 4) "
        "| 4096 records | compute floor 4096 | ratio (goal ≥ 0.60) | vs score + explain in-process "
        "| workers N ÷ 1, c=16 / c=64 (goal ≥ 1.6) | RSS per worker |",
        "|---" * 15 + "|",
    ]
    for r in results:
        compute = r["compute_floor"]
        score_floor = compute["batch 4096"]["records_per_s"]
        results_floor = compute.get("results 4096", {}).get("records_per_s", float("nan"))
        for label, s in r["service"].items():
            floor = r["http_floor"].get(s["stack"])
            c64, c16, big = s["single c=64"], s["single c=16"], s["batch 4096"]
            floor_rps = floor["single c=64"]["rps"] if floor else float("nan")
            twin = one_worker_twin(label, r["service"])
            workers = ""
            if twin is not None:
                alone = r["service"][twin]
                c16_ratio = ratio(c16["rps"], alone["single c=16"]["rps"])
                workers = f"{c16_ratio:.2f} / {ratio(c64['rps'], alone['single c=64']['rps']):.2f} (vs {twin})"
            rss = "/".join(f"{mb:.0f}" for mb in s.get("worker_rss_mb", [s["rss_mb"]])) + " MB"
            cells = [
                r["dataset"],
                label,
                s["stack"],
                f"{c64['rps']:.0f} req/s",
                f"{floor_rps:.0f} req/s",
                f"{ratio(c64['rps'], floor_rps):.2f}",
                f"{c64['rps'] / machine_cores:.0f}",
                f"{c16['p50_ms']:.2f} / {c16['p99_ms']:.2f} ms",
                f"{ratio(c16['p99_ms'], c16['p50_ms']):.1f}",
                f"{big['records_per_s']:.0f} rec/s",
                f"{score_floor:.0f} rec/s",
                f"{ratio(big['records_per_s'], score_floor):.2f}",
                f"{ratio(big['records_per_s'], results_floor):.2f}",
                workers,
                rss,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(results: list[dict[str, Any]]) -> str:
    """Every scenario: service beside the HTTP floor on its stack and the compute floor."""
    lines = [
        "| data set | variant | load | service | HTTP floor (same stack) | compute floor | ratio |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(m: dict[str, Any]) -> str:
        return f"{m['rps']:.0f} req/s, p50 {m['p50_ms']:.2f} / p99 {m['p99_ms']:.2f} ms"

    for r in results:
        compute = r["compute_floor"]
        for label, service in r["service"].items():
            where = f"{r['dataset']} | {label}"
            http = r["http_floor"].get(service["stack"])
            for c in SINGLE_CONCURRENCY:
                s = service[f"single c={c}"]
                h = http[f"single c={c}"] if http else None
                lines.append(
                    f"| {where} | 1 record, c={c} | {cell(s)} | {cell(h) if h else ''} | "
                    f"{compute['batch 1']['records_per_s']:.0f} rec/s (batch 1) | "
                    + (f"{ratio(s['rps'], h['rps']):.0%} of HTTP floor; " if h else "")
                    + f"p99/p50 {ratio(s['p99_ms'], s['p50_ms']):.1f} |"
                )
            for size in BATCH_SIZES:
                s = service[f"batch {size}"]
                h = http[f"batch {size}"] if http else None
                floor = compute[f"batch {size}"]["records_per_s"]
                lines.append(
                    f"| {where} | {size} records, c=1 | {s['records_per_s']:.0f} rec/s | "
                    f"{h['records_per_s'] if h else float('nan'):.0f} rec/s | {floor:.0f} rec/s (batch {size}) | "
                    f"{ratio(s['records_per_s'], floor):.0%} of compute floor |"
                )
            floor_rss = f"{http['rss_mb']:.0f} MB" if http else ""
            lines.append(f"| {where} | RSS after warm-up | {service['rss_mb']:.0f} MB | {floor_rss} | | |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="+", type=Path, help="ADBench .npz files (X, y with 0 = normal)")
    parser.add_argument("--models", type=Path, default=Path("/tmp/speed-models"), help="model cache (one per set)")
    parser.add_argument("--quick", action="store_true", help="3 s per scenario, 1 s warm-up")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per scenario (default 10)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds per scenario (default 2)")
    parser.add_argument("--torch-threads", type=int, default=None, help="server and compute floor (default: cores)")
    parser.add_argument("--env", nargs="*", default=[], metavar="NAME=VALUE", help="extra service environment")
    parser.add_argument(
        "--variant", action="append", metavar="NAME[:VAR=VALUE,...]", help="a service run with these variables"
    )
    parser.add_argument("--before", metavar="REF", help="also serve git REF's code (h11 and httptools), first")
    parser.add_argument(
        "--floor-stacks", nargs="+", choices=STACKS, default=list(STACKS), help="HTTP floors to run (default both)"
    )
    parser.add_argument("--label", default="", help="a name for this run, kept in the JSON")
    parser.add_argument("--out", type=Path, help="results JSON (default /tmp/bench-serving-<timestamp>.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.seconds = args.seconds or (3.0 if args.quick else 10.0)
    args.warmup = args.warmup or (1.0 if args.quick else 2.0)
    if shutil.which("wrk") is None:
        raise SystemExit("error: wrk not found; on Debian: apt-get install -y wrk")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or Path(f"/tmp/bench-serving-{stamp}.json")
    meta = {
        "label": args.label,
        "started": stamp,
        "command": " ".join([Path(sys.executable).name, "-m", "bench.serving", *(argv or sys.argv[1:])]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "cores": cores(),
        "load_average_at_start": os.getloadavg(),
        "seconds": args.seconds,
        "env": args.env,
        "variants": args.variant,
        "before": args.before,
        "torch_threads": args.torch_threads,
    }
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        for npz in args.datasets:
            results.append(run_dataset(npz, args, Path(tmp)))
            out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))  # after each data set
    meta["load_average_at_end"] = os.getloadavg()
    meta["finished"] = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    say()
    say(goals_table(results, meta["cores"]))
    say()
    say(table(results))
    say(f"\nload average at start {meta['load_average_at_start']}, at end {meta['load_average_at_end']}")
    say(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
