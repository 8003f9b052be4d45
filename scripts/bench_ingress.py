"""The measuring half of scripts/bench-ingress (stdlib only; the peers are installed by it)."""

import hashlib
import hmac
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINS = os.environ["RUNWAY_RELEASE_BINS"]
PYTHON = os.environ["BENCH_PYTHON"]
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "20"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
# Which to measure, for quick A/B runs while profiling: "runway" (Runway's ingress alone),
# "peers" (adnanh/webhook and Flask), "queue" (the queueing push); default all.
MEASURED = {"runway", "peers", "queue"}
ONLY = set(filter(None, os.environ.get("BENCH_ONLY", ",".join(sorted(MEASURED))).split(",")))
if not ONLY or not ONLY <= MEASURED:
    sys.exit(f"BENCH_ONLY={os.environ.get('BENCH_ONLY')!r}: name one or more of "
             f"{', '.join(sorted(MEASURED))}, separated by commas")
PAYLOAD_BYTES = 7_500
APP = "bench"
HOOK_SECRET = "peer-secret-" + uuid.uuid4().hex

# wrk's script: the same signed body on every request, a fresh delivery id on each (the run's
# and the thread's prefix, then a counter), as GitHub sends them.
WRK_LUA = textwrap.dedent(
    """
    local threads = 0
    function setup(thread)
      threads = threads + 1
      -- args[3]: this run's own 8 hex digits, so no two runs send the same delivery id.
      thread:set("thread_number", threads)
    end
    function init(args)
      counter = 0
      wrk.method = "POST"
      local file = io.open(args[1], "rb")
      wrk.body = file:read("*a")
      file:close()
      wrk.headers["Content-Type"] = "application/json"
      wrk.headers["X-GitHub-Event"] = "push"
      wrk.headers["User-Agent"] = "GitHub-Hookshot/bench"
      wrk.headers["X-Hub-Signature-256"] = args[2]
      prefix = string.format("%s-%04x-4000-8000-", args[3], thread_number)
    end
    function request()
      counter = counter + 1
      wrk.headers["X-GitHub-Delivery"] = prefix .. string.format("%012x", counter)
      return wrk.format()
    end
    """
)

FLASK_APP = textwrap.dedent(
    """
    import hashlib, hmac, json, os, sqlite3
    from flask import Flask, abort, request

    SECRET = os.environ["HOOK_SECRET"].encode()
    app = Flask(__name__)
    db = sqlite3.connect(os.environ["HOOK_DB"], isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS deliveries (id TEXT PRIMARY KEY, ref TEXT, sha TEXT)")

    @app.post("/hook")
    def hook():
        body = request.get_data()
        expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Hub-Signature-256", "")):
            abort(401)
        if request.headers.get("X-GitHub-Event") != "push":
            return {"status": "ignored"}, 202
        push = json.loads(body)
        db.execute(
            "INSERT OR IGNORE INTO deliveries VALUES (?, ?, ?)",
            (request.headers.get("X-GitHub-Delivery"), push["ref"], push["after"]),
        )
        return {"status": "accepted"}, 202
    """
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def push_payload(repo_id, full_name):
    """A GitHub push of about 7.5 KB: the shape GitHub sends, its commits' messages filling it."""
    sha = hashlib.sha1(b"bench").hexdigest()
    commit = lambda n: {
        "id": hashlib.sha1(str(n).encode()).hexdigest(),
        "tree_id": sha,
        "distinct": True,
        "message": f"Commit {n}: " + "tune the dashboard's charts " * 8,
        "timestamp": "2026-11-29T22:00:00Z",
        "url": f"https://github.com/{full_name}/commit/{sha}",
        "author": {"name": "Ada", "email": "ada@example.com", "username": "ada"},
        "committer": {"name": "Ada", "email": "ada@example.com", "username": "ada"},
        "added": [], "removed": [], "modified": ["streamlit_app.py"],
    }
    payload = {
        "ref": "refs/heads/main", "before": "0" * 40, "after": sha,
        "created": False, "deleted": False, "forced": False, "base_ref": None,
        "compare": f"https://github.com/{full_name}/compare/000000000000...{sha[:12]}",
        "repository": {
            "id": repo_id, "node_id": "R_bench", "name": full_name.split("/")[1],
            "full_name": full_name, "private": False, "default_branch": "main",
            "html_url": f"https://github.com/{full_name}",
            "clone_url": f"https://github.com/{full_name}.git",
            "owner": {"name": "ada", "login": "ada", "id": 1, "type": "User"},
        },
        "pusher": {"name": "ada", "email": "ada@example.com"},
        "sender": {"login": "ada", "id": 1, "type": "User"},
        "commits": [], "head_commit": None,
    }
    n = 0
    while len(json.dumps(payload)) < PAYLOAD_BYTES:
        payload["commits"].append(commit(n))
        n += 1
    payload["head_commit"] = payload["commits"][-1]
    return json.dumps(payload).encode()


def sign(secret, body):
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except FileNotFoundError:
            pass
    return total


def tree(pid):
    """The process and its descendants (gunicorn's workers)."""
    pids, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            children = open(f"/proc/{parent}/task/{parent}/children").read().split()
        except FileNotFoundError:
            children = []
        for child in map(int, children):
            pids.append(child)
            frontier.append(child)
    return pids


class Server:
    def __init__(self, name, path, command, url, env=None, cwd=None, signature=None, body=None):
        self.name, self.path, self.url = name, path, url
        self.command, self.env, self.cwd = command, env, cwd
        self.signature, self.body = signature, body

    def start(self):
        """Starts it; answers the time from the process's start to its first 2xx."""
        env = dict(os.environ, **(self.env or {}))
        started = time.perf_counter()
        self.process = subprocess.Popen(
            self.command, env=env, cwd=self.cwd,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        while True:
            if self.process.poll() is not None:
                sys.exit(f"{self.name} exited with {self.process.returncode} before answering")
            try:
                request = urllib.request.Request(self.url, data=self.body, method="POST")
                for name, value in self.headers(uuid.uuid4()).items():
                    request.add_header(name, value)
                with urllib.request.urlopen(request, timeout=5) as response:
                    if 200 <= response.status < 300:
                        return time.perf_counter() - started
            except (ConnectionError, urllib.error.URLError):
                time.sleep(0.001)
            if time.perf_counter() - started > 60:
                sys.exit(f"{self.name} did not answer within a minute")

    def headers(self, delivery):
        return {
            "Content-Type": "application/json", "X-GitHub-Event": "push",
            "X-GitHub-Delivery": str(delivery), "X-Hub-Signature-256": self.signature,
        }

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def wrk(server, body_file):
    """One wrk run: (req/s, p50 ms, p99 ms, 2xx count, peak RSS KiB, CPU %)."""
    lua = os.path.join(os.path.dirname(body_file), "push.lua")
    command = [
        "wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency", "-s", lua,
        server.url, "--", body_file, server.signature, uuid.uuid4().hex[:8],
    ]
    pids = tree(server.process.pid)
    ticks, began = cpu_ticks(pids), time.perf_counter()
    run = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peak = 0
    while run.poll() is None:
        peak = max(peak, rss_kib(tree(server.process.pid)))
        time.sleep(0.2)
    output = run.stdout.read()
    cpu = (cpu_ticks(tree(server.process.pid)) - ticks) / os.sysconf("SC_CLK_TCK")
    cpu_share = 100 * cpu / (time.perf_counter() - began)
    rate = float(next(l for l in output.splitlines() if l.startswith("Requests/sec:")).split()[1])
    total = int(next(l for l in output.splitlines() if "requests in" in l).split()[0])
    errors = 0
    for line in output.splitlines():
        if "Non-2xx or 3xx responses:" in line:
            errors = int(line.split()[-1])
    latency = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("50%", "99%"):
            latency[parts[0]] = milliseconds(parts[1])
    return rate, latency["50%"], latency["99%"], total - errors, peak, cpu_share


def milliseconds(text):
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    raise ValueError(text)


def measure(server, body_file):
    """Starts the server, measures it idle and under load BENCH_RUNS times, and stops it."""
    first = server.start()
    time.sleep(1)
    idle = rss_kib(tree(server.process.pid))
    runs = [wrk(server, body_file) for _ in range(RUNS)]
    result = {
        "name": server.name, "path": server.path, "start_ms": first * 1000,
        "idle_mib": idle / 1024,
        "rate": statistics.median(r[0] for r in runs),
        "p50": statistics.median(r[1] for r in runs),
        "p99": statistics.median(r[2] for r in runs),
        "acked": sum(r[3] for r in runs),
        "rss_mib": max(r[4] for r in runs) / 1024,
        "cpu": statistics.median(r[5] for r in runs),
    }
    server.stop()
    return result


def submit_app(work, data_dir):
    """The app the pushes are for: submitted from a local repository through submit (its
    release stays queued: no worker runs), so the record is the one Runway writes."""
    repo = os.path.join(work, "repo")
    os.makedirs(repo)
    with open(os.path.join(repo, "streamlit_app.py"), "w") as f:
        f.write("import streamlit as st\nst.title('bench')\n")
    git = lambda *args: subprocess.run(
        ["git", "-C", repo, "-c", "user.name=bench", "-c", "user.email=b@b", *args],
        check=True, capture_output=True,
    )
    git("init", "-q", "-b", "main")
    git("add", ".")
    git("commit", "-q", "-m", "bench")
    port = free_port()
    submit = subprocess.Popen(
        [os.path.join(BINS, "submit")],
        env=dict(os.environ, PORT=str(port), RUNWAY_DATA_DIR=data_dir, RUST_LOG="warn"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        body = json.dumps({"repo_url": repo, "main_file": "streamlit_app.py", "app_name": APP})
        for _ in range(600):
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/deployments", data=body.encode(), method="POST",
                    headers={"content-type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=30) as response:
                    assert response.status == 202, response.status
                    break
            except (ConnectionError, urllib.error.URLError) as error:
                if isinstance(error, urllib.error.HTTPError):
                    sys.exit(f"submit refused the app: {error.read().decode()}")
                time.sleep(0.05)
    finally:
        submit.terminate()
        submit.wait()
    database = os.path.join(data_dir, "runway.db")
    with sqlite3.connect(database) as db:
        (doc,) = db.execute("SELECT doc FROM deployments WHERE app = ?", (APP,)).fetchone()
    key = open(os.path.join(data_dir, "webhook-secret")).read().strip()
    secret = hmac.new(key.encode(), b"runway-webhook:" + APP.encode(), hashlib.sha256).hexdigest()
    return json.loads(doc)["repo_id"], secret


def count(database, query):
    with sqlite3.connect(database) as db:
        return db.execute(query).fetchone()[0]


def main():
    work = tempfile.mkdtemp(prefix="runway-bench-ingress-")
    with open(os.path.join(work, "push.lua"), "w") as f:
        f.write(WRK_LUA)
    data_dir = os.path.join(work, "runway")
    repo_id, app_secret = submit_app(work, data_dir)
    database = os.path.join(data_dir, "runway.db")
    bodies = {}
    for name, payload in (
        ("other-repo", push_payload(repo_id + 1, "ada/another")),
        ("queues", push_payload(repo_id, "ada/bench")),
    ):
        bodies[name] = os.path.join(work, f"{name}.json")
        with open(bodies[name], "wb") as f:
            f.write(payload)
    body = open(bodies["other-repo"], "rb").read()

    results = []
    runway_env = {
        "RUNWAY_DATA_DIR": data_dir,
        "RUST_LOG": os.environ.get("RUST_LOG", "info"),
        # wrk sends every push from one address to one app, tens of thousands a second: the
        # limits still count each one (their cost is measured) but never refuse.
        "RUNWAY_WEBHOOK_APP_PER_MINUTE": "1000000000",
        "RUNWAY_WEBHOOK_SOURCE_PER_MINUTE": "1000000000",
    }

    def runway(path, body_name):
        port = free_port()
        payload = open(bodies[body_name], "rb").read()
        return Server(
            "runway github-webhook", path, [os.path.join(BINS, "github-webhook")],
            f"http://127.0.0.1:{port}/github/webhook/{APP}",
            env=dict(runway_env, PORT=str(port)),
            signature=sign(app_secret, payload), body=payload,
        )

    if "runway" in ONLY:
        before = count(database, "SELECT count(*) FROM deliveries")
        results.append(measure(runway("verify, dedupe, record", "other-repo"), bodies["other-repo"]))
        # Less the start's own probe, which was acknowledged and recorded too.
        results[-1]["recorded"] = count(database, "SELECT count(*) FROM deliveries") - before - 1

    if "peers" in ONLY:
        for command, path in (("/nonexistent/command", "pure ingress"), ("/bin/true", "runs /bin/true")):
            port = free_port()
            hooks = os.path.join(work, f"hooks-{port}.json")
            with open(hooks, "w") as f:
                json.dump([{
                    "id": "push", "execute-command": command, "command-working-directory": work,
                    "trigger-rule": {"match": {
                        "type": "payload-hmac-sha256", "secret": HOOK_SECRET,
                        "parameter": {"source": "header", "name": "X-Hub-Signature-256"},
                    }},
                }], f)
            results.append(measure(Server(
                "adnanh/webhook", path,
                ["webhook", "-hooks", hooks, "-ip", "127.0.0.1", "-port", str(port)],
                f"http://127.0.0.1:{port}/hooks/push",
                signature=sign(HOOK_SECRET, body), body=body,
            ), bodies["other-repo"]))

        port = free_port()
        flask_dir = os.path.join(work, "flask")
        os.makedirs(flask_dir)
        with open(os.path.join(flask_dir, "receiver.py"), "w") as f:
            f.write(FLASK_APP)
        flask_db = os.path.join(flask_dir, "deliveries.db")
        results.append(measure(Server(
            "Flask on gunicorn (2 sync)", "verify, record", [
                PYTHON, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "--log-level", "warning",
                "receiver:app",
            ],
            f"http://127.0.0.1:{port}/hook", cwd=flask_dir,
            env={"HOOK_SECRET": HOOK_SECRET, "HOOK_DB": flask_db},
            signature=sign(HOOK_SECRET, body), body=body,
        ), bodies["other-repo"]))
        results[-1]["recorded"] = count(flask_db, "SELECT count(*) FROM deliveries") - 1

    if "queue" in ONLY:
        before_releases = count(database, "SELECT count(*) FROM releases")
        before = count(database, "SELECT count(*) FROM deliveries")
        results.append(measure(runway("queues a release (consumer stopped)", "queues"), bodies["queues"]))
        results[-1]["recorded"] = count(database, "SELECT count(*) FROM deliveries") - before - 1
        results[-1]["releases"] = count(database, "SELECT count(*) FROM releases") - before_releases - 1

    report(results)


def report(results):
    peer = next((r for r in results if r["name"] == "adnanh/webhook" and r["path"] == "pure ingress"),
                None)
    cores = os.cpu_count()
    print(f"\nIngress, {RUNS} x {SECONDS} s of wrk at {CONNECTIONS} connections, 7.5 KB signed "
          f"pushes, {cores} cores, {time.strftime('%Y-%m-%d')}:\n")
    print("| server | path | req/s (median) | vs adnanh/webhook | p50 ms | p99 ms | RSS under load "
          "MiB | idle RSS MiB | CPU % | start → first 2xx ms | 2xx acknowledged | recorded |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        recorded = r.get("recorded")
        if recorded is None:
            shown = "—"
        else:
            shown = f"{recorded:,}" + (" (all)" if recorded >= r["acked"] else " (LOST SOME)")
        ratio = f"{r['rate'] / peer['rate']:.2f}x" if peer else "—"
        print(f"| {r['name']} | {r['path']} | {r['rate']:,.0f} | {ratio} | "
              f"{r['p50']:.2f} | {r['p99']:.2f} | {r['rss_mib']:.1f} | {r['idle_mib']:.1f} | "
              f"{r['cpu']:.0f} | {r['start_ms']:.0f} | {r['acked']:,} | {shown} |")
    queued = results[-1]
    if "releases" in queued:
        print(f"\nReleases queued by the last run: {queued['releases']:,} for "
              f"{queued['acked']:,} acknowledged pushes (a newer one supersedes the queued one).")


if __name__ == "__main__":
    main()
