#!/usr/bin/env python3
"""rollcall backup bench: what an online backup costs a running server.

Builds release, generates N users (examples/dataset) and imports them,
starts `rollcall serve`, then:

1. read p99 on a list page (`/users?limit=100`, wrk, 4 connections) for a
   few seconds with nothing else running;
2. the same while a `rollcall backup` runs (the window starts after the
   backup and ends before it), alternating with 1. for a few rounds;
3. one backup alone, timed;
4. webhook writes (examples/webhook_load) without, then with a backup
   running: how much the (compacted) database file grows, since the
   backup's read transaction pins the pages of its snapshot while writes go
   on.

    python3 benches/backup.py                  # 1,000,000 users
    python3 benches/backup.py --users 100000 --seconds 5

Needs: wrk (`apt-get install wrk`), openssl. Run from the repository root.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import DIR_UUID, ROOT, STARTED, Rollcall, rs256_token, sh  # noqa: E402
from sync import wrk_latency  # noqa: E402


def build():
    print("building (release)…", file=sys.stderr)
    sh("cargo", "build", "--release", "--quiet", "--bin", "rollcall", "--example", "dataset",
       "--example", "webhook_load", cwd=ROOT)
    target = os.path.join(ROOT, "target", "release")
    return (os.path.join(target, "rollcall"), os.path.join(target, "examples", "dataset"),
            os.path.join(target, "examples", "webhook_load"))


def backup(binary, data, target):
    t0 = time.time()
    sh(binary, "--data", data, "backup", target)
    return time.time() - t0


def size_mb(path):
    return os.path.getsize(path) / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=int, default=8, help="per wrk window")
    ap.add_argument("--rounds", type=int, default=3, help="idle and backup windows, alternating")
    ap.add_argument("--events", type=int, default=20_000, help="webhook events per write phase")
    ap.add_argument("--port", type=int, default=18190)
    args = ap.parse_args()

    binary, gen, webhook_load = build()
    workdir = tempfile.mkdtemp(prefix="rollcall-backup-bench-")
    try:
        data = os.path.join(workdir, "data", "rollcall.redb")
        ndjson = os.path.join(workdir, "users.ndjson")
        with open(ndjson, "w") as f:
            subprocess.run([gen, str(args.users)], stdout=f, check=True)
        t0 = time.time()
        sh(binary, "--data", data, "import", ndjson)
        print(f"imported {args.users} users in {time.time() - t0:.1f}s; database {size_mb(data):.0f} MB")
        os.remove(ndjson)
        # No free pages left from the import: growth under writes shows.
        t0 = time.time()
        sh(binary, "--data", data, "compact")
        print(f"compacted in {time.time() - t0:.1f}s; database {size_mb(data):.0f} MB")

        jwks = os.path.join(ROOT, "tests", "fixtures", "jwks.json")
        token = rs256_token(os.path.join(ROOT, "tests", "fixtures", "rsa_private.pem"))
        server = Rollcall(binary, data, jwks, args.port, ("--workos-webhook-secret", "whsec_bench"))
        url = f"http://127.0.0.1:{args.port}/api/directories/{DIR_UUID}/users?limit=100"
        target = os.path.join(workdir, "backups", "rollcall.redb")
        os.makedirs(os.path.dirname(target))

        wrk_latency(url, token, 2)  # warm up
        # Alternating windows, so other load on the machine falls on both.
        idle, busy, times = [], [], []
        for _ in range(args.rounds):
            idle.append(wrk_latency(url, token, args.seconds))
            result = {}
            t = threading.Thread(target=lambda: result.setdefault("secs", backup(binary, data, target)))
            t.start()
            time.sleep(0.5)  # the backup's read transaction is open
            t0 = time.time()
            busy.append(wrk_latency(url, token, args.seconds))
            waited = time.time() - t0
            t.join()
            times.append(result["secs"])
            if result["secs"] < waited + 0.5:
                print(f"warning: a backup ({result['secs']:.1f}s) ended before the {waited:.1f}s window did",
                      file=sys.stderr)

        alone = backup(binary, data, target)

        before = size_mb(data)
        t0 = time.time()
        writes = sh(webhook_load, f"http://127.0.0.1:{args.port}", "whsec_bench", str(args.events), "32").stdout
        plain_growth, plain_secs = size_mb(data) - before, time.time() - t0
        time.sleep(1.1)  # webhook_load names a run's users after the second

        before = size_mb(data)
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("secs", backup(binary, data, target)))
        t.start()
        time.sleep(0.2)
        writes_during = sh(webhook_load, f"http://127.0.0.1:{args.port}", "whsec_bench", str(args.events),
                           "32").stdout
        t.join()
        backup_growth = size_mb(data) - before
        server.stop()

        print(f"users: {args.users}; database {size_mb(data):.0f} MB; backup file {size_mb(target):.0f} MB")
        def median(xs):
            return sorted(xs)[len(xs) // 2]

        def show(rows):
            return ", ".join(f"{p:.2f}" for p, _ in rows)

        print(f"list page (limit=100) p99, idle:          median {median([p for p, _ in idle]):.2f} ms "
              f"(rounds: {show(idle)} ms; {median([r for _, r in idle]):.0f} req/s)")
        print(f"list page (limit=100) p99, during backup: median {median([p for p, _ in busy]):.2f} ms "
              f"(rounds: {show(busy)} ms; {median([r for _, r in busy]):.0f} req/s)")
        print(f"backups under that read load: {', '.join(f'{t:.1f}' for t in times)} s")
        print(f"one backup, no load: {alone:.1f}s")
        print(f"{args.events} webhook events, no backup:   file grew {plain_growth:.1f} MB in {plain_secs:.1f}s "
              f"({writes.strip()})")
        print(f"{args.events} webhook events, one backup: file grew {backup_growth:.1f} MB; "
              f"the backup took {result.get('secs', float('nan')):.1f}s ({writes_during.strip()})")
    finally:
        for p in STARTED:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
