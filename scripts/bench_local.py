"""The timing half of scripts/bench-local (stdlib only)."""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
APP = open(os.path.join(ROOT, "examples/hello/streamlit_app.py")).read()


def http(url, body=None, host=None):
    request = urllib.request.Request(url, data=body and json.dumps(body).encode(), method="POST" if body else "GET")
    request.add_header("content-type", "application/json")
    if host:
        request.add_header("host", host)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def git(cwd, *args):
    subprocess.run(["git", "-C", cwd, "-c", "user.name=bench", "-c", "user.email=b@b", *args], check=True, capture_output=True)


def wait_live(base, release_id, app="bench"):
    while True:
        status = http(f"{base}/api/apps/{app}")
        release = next((r for r in status["releases"] if r["id"] == release_id), None)
        if release and release["state"] in ("live", "failed", "superseded"):
            assert release["state"] == "live", release
            return
        time.sleep(0.05)


def wait_push_release(base, commit):
    while True:
        for release in http(f"{base}/api/apps/bench")["releases"]:
            if release["commit"] == commit and release["trigger"] == "push":
                return release["id"]
        time.sleep(0.05)


def repository(tmp, name="app"):
    """A bare repository holding the example app, and a clone to push from."""
    bare, work = os.path.join(tmp, f"{name}.git"), os.path.join(tmp, f"{name}-work")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", bare], check=True)
    subprocess.run(["git", "clone", "-q", bare, work], check=True, capture_output=True)
    open(os.path.join(work, "streamlit_app.py"), "w").write(APP)
    open(os.path.join(work, "requirements.txt"), "w").write("streamlit\n")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "one")
    git(work, "push", "-q", "origin", "HEAD:main")
    return bare, work


def start_runway(tmp, cache):
    env = dict(os.environ, RUNWAY_LISTEN="127.0.0.1:0", RUNWAY_DATA_DIR=os.path.join(tmp, "data"), RUNWAY_UV_CACHE_DIR=cache)
    runway = subprocess.Popen([os.environ["RUNWAY_BIN"]], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return runway, runway.stdout.readline().split()[-1]


def peak_rss_mib(pid):
    """The process's own peak resident memory (VmHWM), in MiB."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def runway_once(cache, cold):
    """(submit→live, push→live) seconds for one fresh runway."""
    with tempfile.TemporaryDirectory() as tmp:
        bare, work = repository(tmp)
        if cold:
            shutil.rmtree(cache, ignore_errors=True)
        runway, base = start_runway(tmp, cache)
        try:
            start = time.monotonic()
            answer = http(f"{base}/api/deployments", {"repo_url": "file://" + bare, "main_file": "streamlit_app.py", "app_name": "bench", "secrets": 'greeting = "bench"'})
            wait_live(base, answer["release_id"])
            submit = time.monotonic() - start
            if cold:
                shutil.rmtree(cache, ignore_errors=True)
            open(os.path.join(work, "streamlit_app.py"), "a").write("\nst.write('two')\n")
            git(work, "commit", "-qam", "two")
            start = time.monotonic()
            git(work, "push", "-q", "origin", "HEAD:main")
            commit = subprocess.run(["git", "-C", work, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
            wait_live(base, wait_push_release(base, commit))
            push = time.monotonic() - start
            return submit, push
        finally:
            runway.terminate()
            runway.wait()


def many_apps(cache, count):
    """Seconds until `count` apps submitted at once are all live, and runway's peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        bare, _ = repository(tmp)
        runway, base = start_runway(tmp, cache)
        try:
            start = time.monotonic()
            releases = {}
            for n in range(count):
                app = f"app{n:02}"
                answer = http(f"{base}/api/deployments", {"repo_url": "file://" + bare, "main_file": "streamlit_app.py", "app_name": app})
                releases[app] = answer["release_id"]
            for app, release in releases.items():
                wait_live(base, release, app)
            return time.monotonic() - start, peak_rss_mib(runway.pid)
        finally:
            runway.terminate()
            runway.wait()


def push_storm(cache, pushes, seconds):
    """`pushes` pushes to one app within `seconds`: builds run, the newest live, and when."""
    with tempfile.TemporaryDirectory() as tmp:
        bare, work = repository(tmp)
        runway, base = start_runway(tmp, cache)
        try:
            answer = http(f"{base}/api/deployments", {"repo_url": "file://" + bare, "main_file": "streamlit_app.py", "app_name": "bench"})
            wait_live(base, answer["release_id"])
            start = time.monotonic()
            for n in range(pushes):
                open(os.path.join(work, "streamlit_app.py"), "a").write(f"\nst.write('push {n}')\n")
                git(work, "commit", "-qam", f"push {n}")
                git(work, "push", "-q", "origin", "HEAD:main")
                time.sleep(max(0.0, start + (n + 1) * seconds / pushes - time.monotonic()))
            newest = subprocess.run(["git", "-C", work, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
            last = time.monotonic()
            while True:
                status = http(f"{base}/api/apps/bench")
                live = next((r for r in status["releases"] if r["id"] == status["live_release"]), None)
                pending = [r for r in status["releases"] if r["state"] not in ("live", "failed", "superseded")]
                if live and live["commit"] == newest and not pending:
                    break
                time.sleep(0.05)
            settled = time.monotonic() - last
            releases, page = [], http(f"{base}/api/apps/bench")
            while True:  # the newest 20 a page, then older ones
                releases += [r for r in page["releases"] if r["trigger"] == "push"]
                if page.get("next_before") is None:
                    break
                page = http(f"{base}/api/apps/bench?before={page['next_before']}")
            built = sum(1 for r in releases if r.get("log_url"))
            return len(releases), built, settled
        finally:
            runway.terminate()
            runway.wait()


def by_hand_once(pip_cache, cold):
    """venv + pip install + streamlit run until /_stcore/health answers: what Runway automates."""
    with tempfile.TemporaryDirectory() as tmp:
        open(os.path.join(tmp, "streamlit_app.py"), "w").write(APP)
        if cold:
            shutil.rmtree(pip_cache, ignore_errors=True)
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", os.path.join(tmp, "venv")], check=True)
        subprocess.run([os.path.join(tmp, "venv/bin/pip"), "install", "-q", "--cache-dir", pip_cache, "streamlit"], check=True)
        port = free_port()
        app = subprocess.Popen([os.path.join(tmp, "venv/bin/streamlit"), "run", "streamlit_app.py", f"--server.port={port}", "--server.headless=true", "--browser.gatherUsageStats=false"], cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as r:
                        if r.read() == b"ok":
                            return time.monotonic() - start
                except OSError:
                    time.sleep(0.05)
        finally:
            app.terminate()
            app.wait()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    scratch = tempfile.mkdtemp(prefix="runway-bench-")
    uv_cache, pip_cache = os.path.join(scratch, "uv-cache"), os.path.join(scratch, "pip-cache")
    results = {}
    try:
        for cold in (True, False):
            label = "cold" if cold else "warm"
            if not cold:  # fill the caches once
                runway_once(uv_cache, False)
                by_hand_once(pip_cache, False)
            runs = [runway_once(uv_cache, cold) for _ in range(RUNS)]
            hand = [by_hand_once(pip_cache, cold) for _ in range(RUNS)]
            results[label] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), statistics.median(hand))
        apps = int(os.environ.get("BENCH_APPS", "20"))
        together, rss = many_apps(uv_cache, apps)
        pushes = int(os.environ.get("BENCH_PUSHES", "50"))
        received, built, settled = push_storm(uv_cache, pushes, 10)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\nRunway on the embedded default, median of {RUNS} runs each ({os.cpu_count()} cores)")
    print(f"{'cache':6} {'submit→live':>12} {'push→live':>10} {'by hand':>9} {'submit/hand':>12} {'push/hand':>10}")
    for label, (submit, push, hand) in results.items():
        print(f"{label:6} {submit:11.2f}s {push:9.2f}s {hand:8.2f}s {submit / hand:11.2f}x {push / hand:9.2f}x")
    print("\nby hand = python -m venv + pip install streamlit + streamlit run, until /_stcore/health answers")
    print(f"\n{apps} apps submitted at once (warm cache): all live after {together:.1f}s; runway's own peak RSS {rss:.1f} MiB")
    print(f"{pushes} pushes to one app in 10 s: {received} releases, {built} built (the rest superseded while queued); newest live {settled:.1f}s after the last push")


if __name__ == "__main__":
    main()
