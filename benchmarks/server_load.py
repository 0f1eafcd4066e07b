"""Load on one tracking server, measured: a PostgreSQL-backed `mlflow server` against a
SQLite-backed one, in one run, on 127.0.0.1 only.

    python benchmarks/server_load.py               # N = 8 jobs of 5 epochs; about 5 minutes

Each backend gets a fresh server as a team would run it (MLflow's default uvicorn server with
its default 4 workers, proxied artifacts; PostgreSQL from Debian's package, as in the tests),
then two loads, one after the other:

1. jobs: N short training jobs at once, N/2 in a joblib sweep and N/2 in a submitit_local
   sweep (separate processes), the two sweeps started together into one experiment. Checked:
   every child under its parent, every epoch's train/ and val/ metrics present exactly once,
   no "database is locked" anywhere, no lost or failed run, no failed request. Every HTTP
   request the jobs make is timed in the client (the jobs load a sitecustomize, written here,
   that times requests' sends): p50/p99 latency as the jobs saw it.
2. burst: W writer processes send K log_batch requests of M metrics each, as fast as the server
   answers (an epoch's record is one such request): the server's write capacity, the figure a
   cluster's worth of jobs is held against (the README's 1000-job estimate).

Records are metric values, params and tags as the store holds them afterwards; records/s is
their number over the load's window (the first request to the last). Prints the tables and
writes them to benchmarks/results/server_load.md.
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE / "tests"))  # the tests' real servers: PostgresServer, MlflowServer

from helpers import FAST, MlflowServer, PostgresServer  # noqa: E402

RESULTS = HERE / "benchmarks" / "results"
LOCKED = "database is locked"

# Loaded by every process of the jobs phase (PYTHONPATH): each HTTP request of the MLflow
# client (requests' adapter, below MLflow's retries), timed, one line per request.
SITECUSTOMIZE = """
import os, time
_folder = os.environ.get("VNNLAB_LOAD_LOG")
if _folder:
    import requests.adapters

    _send = requests.adapters.HTTPAdapter.send

    def _timed_send(self, request, *args, **kwargs):
        start, began, status = time.time(), time.perf_counter(), "error"
        try:
            response = _send(self, request, *args, **kwargs)
            status = response.status_code
            return response
        finally:
            seconds = time.perf_counter() - began
            host, path = request.url.split("/")[2], request.path_url.split("?")[0]
            with open(os.path.join(_folder, f"{os.getpid()}.log"), "a") as log:
                log.write(f"{start:.6f} {seconds:.6f} {status} {request.method} {host} {path}\\n")

    requests.adapters.HTTPAdapter.send = _timed_send
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class ConnectionWatch:
    """The most connections PostgreSQL held to a database at once, polled every 0.2 s."""

    def __init__(self, postgres: PostgresServer | None, database: str):
        self.postgres, self.database, self.peak = postgres, database, 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        import psycopg

        with psycopg.connect(self.postgres.uri("postgres", driver=""), autocommit=True) as db:
            while not self.stopped.wait(0.2):
                query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                self.peak = max(self.peak, db.execute(query, (self.database,)).fetchone()[0])

    def __enter__(self) -> "ConnectionWatch":
        if self.postgres is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        if self.postgres is not None:
            self.thread.join()


# --- 1. jobs ------------------------------------------------------------------------------------


def run_jobs(url: str, folder: Path, jobs: int, epochs: int) -> dict:
    """N jobs in two sweeps started together; the client's request log and the checks."""
    from mlflow.tracking import MlflowClient

    logs = folder / "requests"
    logs.mkdir()
    (folder / "site").mkdir()
    (folder / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"VNNLAB_LOAD_LOG": str(logs), "PYTHONPATH": str(folder / "site"),
            "OMP_NUM_THREADS": "1"}  # fmt: skip
    half = jobs // 2
    common = ["-m", *FAST, f"trainer.max_epochs={epochs}", f"tracking.uri={url}",
              "tracking.experiment=load"]  # fmt: skip
    seeds = [",".join(str(s) for s in range(first, first + half)) for first in (1, 1 + half)]
    sweeps = {
        "joblib": [*common, f"seed={seeds[0]}", "hydra/launcher=joblib",
                   f"hydra.launcher.n_jobs={half}", "hydra.sweep.dir=multirun/joblib"],
        "submitit_local": [*common, f"seed={seeds[1]}", "hydra/launcher=submitit_local",
                           "hydra.sweep.dir=multirun/submitit"],
    }  # fmt: skip
    started = time.time()
    processes = {
        name: subprocess.Popen([sys.executable, "-m", "vnnlab", *arguments], cwd=folder, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, arguments in sweeps.items()
    }  # fmt: skip
    outputs = {name: process.communicate(timeout=1800)[0] for name, process in processes.items()}
    wall = time.time() - started
    failed_sweeps = [name for name, p in processes.items() if p.returncode != 0]
    for name, output in outputs.items():  # a sweep's own complaints, such as a missing table
        for line in output.splitlines():
            if line.startswith("vnnlab:"):
                print(f"{name}: {line}")
    for name in failed_sweeps:
        print(f"{name} sweep exited {processes[name].returncode}:\n{outputs[name][-3000:]}")

    job_logs = [path.read_text() for path in folder.glob("multirun/**/*.log")]
    locked = sum(text.count(LOCKED) for text in [*outputs.values(), *job_logs])
    logged = [line.split() for path in logs.glob("*.log") for line in path.read_text().splitlines()]
    server = url.split("/")[2]
    requests = [fields for fields in logged if fields[4] == server]  # the tracking server's
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("load")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("vnnlab.sweep.role") == "parent"]
    parent_ids = {p.info.run_id for p in parents}
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in parent_ids]
    child_ids = {c.info.run_id for c in children}
    expected_values = found_values = twice = 0
    records = {"children": 0, "parents": 0}
    for run in runs:
        role = "children" if run.info.run_id in child_ids else "parents"
        records[role] += len(run.data.params) + len(run.data.tags)
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            records[role] += len(steps)
            if run.info.run_id in child_ids and key.startswith(("train/", "val/")):
                expected_values += epochs
                found_values += len(set(steps))
                twice += len(steps) - len(set(steps))
    return {
        "wall": wall,
        "requests": requests,
        "records": records["children"] + records["parents"],
        "records_by_role": records,
        "runs": (jobs + 2, len(runs)),
        "children": (jobs, len(children), sum(c.info.status == "FINISHED" for c in children)),
        "epoch_values": (expected_values, found_values, twice),
        "locked": locked,
        "failed_sweeps": failed_sweeps,
    }


# --- 2. burst -----------------------------------------------------------------------------------


def burst_writer(url: str, experiment_id: str, index: int, requests: int, metrics: int,
                 start_at: float) -> list[tuple[float, float]]:  # fmt: skip
    """One writer: its own run, then `requests` log_batch calls of `metrics` values each."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    run_id = client.create_run(experiment_id, run_name=f"burst {index}").info.run_id
    time.sleep(max(0.0, start_at - time.time()))
    timed = []
    for step in range(requests):
        now = int(time.time() * 1000)
        batch = [Metric(f"burst/m{k}", float(step), now, step) for k in range(metrics)]
        began = time.time()
        client.log_batch(run_id, metrics=batch)
        timed.append((began, time.time() - began))
    client.set_terminated(run_id)
    return timed


def run_burst(url: str, writers: int, requests: int, metrics: int) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    experiment_id = client.create_experiment("burst")
    start_at = time.time() + 15  # every writer imported MLflow and made its run by then
    with ProcessPoolExecutor(writers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(burst_writer, url, experiment_id, i, requests, metrics, start_at)
                   for i in range(writers)]  # fmt: skip
        timed = [t for future in futures for t in future.result()]
    runs = client.search_runs([experiment_id])
    found = sum(len(client.get_metric_history(r.info.run_id, "burst/m0")) for r in runs)
    return {"timed": timed, "records": len(timed) * metrics, "values": (writers * requests, found)}


# --- one backend, and the report ------------------------------------------------------------


def measure(backend: str, args: argparse.Namespace, root: Path) -> dict:
    folder = root / backend
    folder.mkdir()
    postgres = None
    if backend == "PostgreSQL":
        postgres = PostgresServer()
        postgres.start()
        store = postgres.create_database("mlflow")
    else:
        store = f"sqlite:///{folder / 'server.db'}"
    server = MlflowServer(folder, backend_store_uri=store, workers=args.workers)
    began = time.perf_counter()
    server.start(timeout=300)
    startup = time.perf_counter() - began
    try:
        with ConnectionWatch(postgres, "mlflow") as watch:
            jobs = run_jobs(server.url, folder, args.jobs, args.epochs)
            burst = run_burst(server.url, args.writers, args.requests, args.metrics)
        server_log = server.log.read_text()
    finally:
        server.stop()
        if postgres is not None:
            postgres.stop()
    jobs["locked"] += server_log.count(LOCKED)
    return {"backend": backend, "startup": startup, "jobs": jobs, "burst": burst,
            "connections": watch.peak if postgres else None}  # fmt: skip


def jobs_row(result: dict) -> str:
    jobs = result["jobs"]
    requests = jobs["requests"]
    starts = [float(r[0]) for r in requests]
    ends = [float(r[0]) + float(r[1]) for r in requests]
    window = max(ends) - min(starts)
    latencies = [float(r[1]) * 1000 for r in requests]
    failed = sum(not r[2].startswith(("2", "4")) for r in requests)  # 5xx, or no answer
    expected_values, found_values, twice = jobs["epoch_values"]
    runs_expected, runs_found = jobs["runs"]
    n, children, finished = jobs["children"]
    per_job = len(requests) / n
    return (
        f"| {result['backend']} | {n} | {len(requests)} ({per_job:.0f}/job) "
        f"| {jobs['records']} ({jobs['records_by_role']['children']} by the jobs) "
        f"| {jobs['records'] / window:.0f} | {percentile(latencies, 0.5):.1f} "
        f"| {percentile(latencies, 0.99):.1f} | {runs_expected} / {runs_found} "
        f"| {children} ({finished} FINISHED) | {expected_values} / {found_values} ({twice} twice) "
        f"| {jobs['locked']} | {failed} | {jobs['wall']:.0f} | {result['startup']:.1f} "
        f"| {result['connections'] if result['connections'] is not None else '-'} |"
    )


def answers_other_than_ok(result: dict) -> str:
    """Requests answered with anything but 2xx, by status and endpoint (a 404 is MLflow's
    answer to a lookup of what is not there yet, an experiment by name, say)."""
    counts: dict[str, int] = {}
    for _, _, status, method, _, path in result["jobs"]["requests"]:
        if not status.startswith("2"):
            key = f"{status} {method} {path}"
            counts[key] = counts.get(key, 0) + 1
    listed = ", ".join(f"{key} ×{n}" for key, n in sorted(counts.items())) or "none"
    return f"- {result['backend']}: {listed}"


def burst_row(result: dict, args: argparse.Namespace) -> str:
    burst = result["burst"]
    window = max(b + s for b, s in burst["timed"]) - min(b for b, _ in burst["timed"])
    latencies = [s * 1000 for _, s in burst["timed"]]
    expected, found = burst["values"]
    return (
        f"| {result['backend']} | {args.writers} × {args.requests} × {args.metrics} "
        f"| {len(burst['timed']) / window:.0f} | {burst['records'] / window:.0f} "
        f"| {percentile(latencies, 0.5):.1f} | {percentile(latencies, 0.99):.1f} "
        f"| {expected} / {found} |"
    )


JOBS_HEADER = [
    "| backend | N jobs | requests | records | records/s | p50 ms | p99 ms | runs expected / found "
    "| children (finished) | epoch values expected / found | database is locked "
    "| failed requests | wall s | server start s | peak DB connections |",
    "|---|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|---:|---:|---:|",
]
BURST_HEADER = [
    "| backend | writers × requests × metrics | requests/s | records/s | p50 ms | p99 ms "
    "| requests expected / stored |",
    "|---|---|---:|---:|---:|---:|---|",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8, help="N, split over the two sweeps")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4, help="mlflow server --workers")
    parser.add_argument("--writers", type=int, default=8, help="burst: writer processes")
    parser.add_argument("--requests", type=int, default=100, help="burst: requests per writer")
    parser.add_argument("--metrics", type=int, default=20, help="burst: metrics per request")
    parser.add_argument("--out", type=Path, default=RESULTS / "server_load.md")
    args = parser.parse_args()
    # MLflow 3 asks its telemetry host for a config from every process: off, so that every
    # request a job makes goes to the server under test (offline it fails anyway).
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    # a SIGTERM ends the run through its finally blocks: the servers stop, the folders go
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    with tempfile.TemporaryDirectory(prefix="vnnlab-load-") as root:
        results = [measure(backend, args, Path(root)) for backend in ("PostgreSQL", "SQLite")]
    jobs = [*JOBS_HEADER, *(jobs_row(r) for r in results)]
    burst = [*BURST_HEADER, *(burst_row(r, args) for r in results)]
    text = "\n".join([
        f"# Tracking server load ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)", "",
        f"`python benchmarks/server_load.py --jobs {args.jobs} --epochs {args.epochs} "
        f"--workers {args.workers}`: mlflow server (uvicorn, {args.workers} workers, proxied "
        "artifacts) on 127.0.0.1; latency is each HTTP request as the client timed it.", "",
        "Jobs: N training jobs at once (N/2 joblib workers, N/2 submitit_local processes, two "
        f"sweeps started together), {args.epochs} epochs each.", "", *jobs, "",
        "Burst: writer processes sending log_batch requests back to back (the server's write "
        "capacity).", "", *burst, "",
        "Jobs' requests not answered 2xx (failed requests counts only 5xx and no answer):", "",
        *(answers_other_than_ok(r) for r in results), "",
    ])  # fmt: skip
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    bad = [r["backend"] for r in results if r["jobs"]["failed_sweeps"]]
    if bad:
        sys.exit(f"sweeps failed on {', '.join(bad)}")


if __name__ == "__main__":
    main()
