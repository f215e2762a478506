#!/usr/bin/env python3
"""rollcall sync benchmark, against the fake WorkOS API (examples/fake_workos).

Three measurements, each printed as one line:

1. unlimited  — `rollcall sync` of N users in D directories with no rate
   limit on either side: users per second end to end (fetch, parse, apply,
   commit).
2. limited    — the same against a fake enforcing WorkOS's published limits
   (4 requests/s per directory on /directory_users, 6,000/min per key) with
   rollcall's default limits: seconds against the limit-bound time.
3. reconcile  — `rollcall serve` on the synced file: a no-change reconcile
   round's seconds (and that it changed nothing), and reads' p99 (wrk
   --latency on a 100-user page) while rounds run back to back, against the
   same server with reconcile off.

    python3 benches/sync.py                        # 100,000 users, 10 directories
    python3 benches/sync.py --users 20000 --skip-limited

Needs wrk and openssl. Run from the repository root.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import ROOT, Rollcall, rs256_token, sh  # noqa: E402

PRIVATE_KEY = os.path.join(ROOT, "tests", "fixtures", "rsa_private.pem")


class Fake:
    """The fake WorkOS API as a process; its first stdout line summarizes it."""

    def __init__(self, binary, directories, users, limits):
        # Niced: WorkOS does not share rollcall's cores, so its stand-in
        # should take what rollcall leaves.
        cmd = ["nice", "-n", "19", binary, "--seed-directories", str(directories), "--seed-users", str(users)]
        if limits:
            cmd.append("--rate-limits")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.summary = json.loads(self.proc.stdout.readline())
        self.url = self.summary["base_url"]
        self.key = self.summary["api_key"]

    def command(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def build():
    print("building (release)…", file=sys.stderr)
    sh("cargo", "build", "--release", "--quiet", "--bin", "rollcall", "--example", "fake_workos", cwd=ROOT)
    target = os.path.join(ROOT, "target", "release")
    return os.path.join(target, "rollcall"), os.path.join(target, "examples", "fake_workos")


def rollcall_sync(binary, data, fake, limits):
    cmd = [binary, "--data", data, "sync", "--workos-api-key", fake.key, "--workos-api-url", fake.url]
    if not limits:
        cmd += ["--workos-requests-per-minute", "0", "--workos-directory-users-per-second", "0"]
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True)
    took = time.time() - t0
    if out.returncode != 0:
        raise SystemExit(f"rollcall sync failed:\n{out.stderr}")
    summary = [line for line in out.stderr.splitlines() if line.startswith("synced:")]
    return took, summary[-1] if summary else out.stderr.strip()


def directory_users_pages(fake):
    """Requests one directory needs on /directory_users: its users' pages and
    each group's member pages (100 per page; an empty listing is one page)."""
    worst = 0
    for d in fake.summary["directories"].values():
        pages = max(1, -(-d["users"] // 100))
        pages += sum(max(1, -(-m // 100)) for m in d["groups"].values())
        worst = max(worst, pages)
    return worst


def readyz(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
        return json.loads(r.read())


def wrk_latency(url, token, seconds):
    out = sh("wrk", "-t1", "-c4", f"-d{seconds}s", "--latency", "-H", f"Authorization: Bearer {token}", url).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} errors:\n{out}")
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return millis(p99), rps


def millis(value):
    m = re.match(r"([\d.]+)(us|ms|s)", value)
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def reconcile(binary, fake, data, workdir, seconds, limits):
    jwks = os.path.join(workdir, "jwks.json")
    shutil.copyfile(os.path.join(ROOT, "tests", "fixtures", "jwks.json"), jwks)
    org = next(iter(fake.summary["directories"].values()))["organization_id"]
    token = rs256_token(PRIVATE_KEY, org)

    idle = Rollcall(binary, data, jwks, 18190)
    req = urllib.request.Request("http://127.0.0.1:18190/api/directories", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req) as r:
        directory = json.loads(r.read())[0]["id"]
    path = f"/api/directories/{directory}/users?limit=100"
    idle_p99, idle_rps = wrk_latency(f"http://127.0.0.1:18190{path}", token, seconds)
    idle.stop()
    size_before = os.path.getsize(data)

    # Rounds back to back (1 s apart): the reads below overlap them.
    unlimited = [] if limits else ["--workos-requests-per-minute", "0", "--workos-directory-users-per-second", "0"]
    busy = Rollcall(binary, data, jwks, 18191, extra=[
        "--workos-api-key", fake.key, "--workos-api-url", fake.url, *unlimited, "--reconcile-interval-secs", "1"])
    deadline = time.time() + 600
    while not (readyz(18191).get("sync") or {}).get("last_reconcile"):
        if time.time() > deadline:
            raise SystemExit("no reconcile round within 600 s")
        time.sleep(0.2)
    first = readyz(18191)["sync"]["last_reconcile"]
    busy_p99, busy_rps = wrk_latency(f"http://127.0.0.1:18191{path}", token, seconds)
    last = readyz(18191)["sync"]["last_reconcile"]
    busy.stop()
    changed = first["created"] + first["updated"] + first["deleted"] + last["created"] + last["updated"] + last["deleted"]
    return {
        "round_seconds": first["seconds"], "last_round_seconds": last["seconds"], "pages": first["pages"],
        "changed": changed, "file_bytes_before": size_before, "file_bytes_after": os.path.getsize(data),
        "idle_p99_ms": idle_p99, "busy_p99_ms": busy_p99, "idle_rps": idle_rps, "busy_rps": busy_rps,
    }


def report_reconcile(kind, r):
    print(f"reconcile ({kind}): no-change round {r['round_seconds']:.2f} s ({r['pages']} pages; "
          f"next round {r['last_round_seconds']:.2f} s), {r['changed']} changes, file "
          f"{r['file_bytes_before']:,} -> {r['file_bytes_after']:,} bytes; reads p99 "
          f"{r['idle_p99_ms']:.2f} ms idle ({r['idle_rps']:,.0f} req/s) vs {r['busy_p99_ms']:.2f} ms "
          f"during rounds ({r['busy_rps']:,.0f} req/s) = {r['busy_p99_ms'] / r['idle_p99_ms']:.2f}x")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--directories", type=int, default=10)
    ap.add_argument("--read-seconds", type=int, default=20, help="wrk duration, idle and during reconcile")
    ap.add_argument("--skip-limited", action="store_true")
    ap.add_argument("--skip-reconcile", action="store_true")
    args = ap.parse_args()
    for tool in ("wrk", "openssl"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is required (apt-get install wrk openssl)")
    binary, fake_binary = build()
    workdir = tempfile.mkdtemp(prefix="rollcall-sync-")
    try:
        fake = Fake(fake_binary, args.directories, args.users, limits=False)
        data = os.path.join(workdir, "unlimited.redb")
        took, summary = rollcall_sync(binary, data, fake, limits=False)
        print(f"unlimited: {args.users} users in {args.directories} directories in {took:.2f} s "
              f"= {args.users / took:,.0f} users/s end to end\n  {summary}")
        if not args.skip_reconcile:
            report_reconcile("unlimited", reconcile(binary, fake, data, workdir, args.read_seconds, False))
        fake.stop()

        if not args.skip_limited:
            fake = Fake(fake_binary, args.directories, args.users, limits=True)
            data = os.path.join(workdir, "limited.redb")
            took, summary = rollcall_sync(binary, data, fake, limits=True)
            per_dir = args.users / args.directories
            formula = per_dir / 400
            bound = directory_users_pages(fake) / 4
            stats = fake.command("stats")
            print(f"limited: {took:.2f} s; users/(4 x 100 per directory per s) = {formula:.2f} s; with the "
                  f"group member pages also on /directory_users {bound:.2f} s -> {took / bound:.3f}x the bound; "
                  f"throttled {stats['throttled']}, peak {stats['peak_directory_users_per_second']} "
                  f"directory_users requests/s per directory\n  {summary}")
            if not args.skip_reconcile:
                report_reconcile("limited", reconcile(binary, fake, data, workdir, args.read_seconds, True))
            fake.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
