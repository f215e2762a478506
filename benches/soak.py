#!/usr/bin/env python3
"""Soak: mixed list reads and webhook writes, with injected bad requests, for
a bounded time against a real rollcall; reports unexpected errors (must be
0), p99 latencies and RSS at start, end and peak.

    python3 benches/soak.py                      # 60 s, release build
    python3 benches/soak.py --seconds 10 --debug # the short form CI runs

Run from the repository root; needs openssl (to sign the RS256 tokens).
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import DIR_UUID, ROOT, rs256_token, status_kb, wait_healthy  # noqa: E402

OTHER_ORG = "org_01SOAKOTHER0000000000000000"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--readers", type=int, default=8)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--debug", action="store_true", help="use the debug build (faster to build)")
    args = ap.parse_args()
    profile = [] if args.debug else ["--release"]
    subprocess.run(["cargo", "build", "--quiet", *profile, "--bin", "rollcall", "--example", "dataset", "--example", "soak"],
                   cwd=ROOT, check=True)
    target = os.path.join(ROOT, "target", "debug" if args.debug else "release")
    binary, gen, soak = (os.path.join(target, "rollcall"), os.path.join(target, "examples", "dataset"),
                         os.path.join(target, "examples", "soak"))
    work = tempfile.mkdtemp(prefix="rollcall-soak-")
    try:
        data = os.path.join(work, "soak.redb")
        ndjson = os.path.join(work, "users.ndjson")
        with open(ndjson, "w") as f:
            subprocess.run([gen, str(args.users)], stdout=f, check=True)
        subprocess.run([binary, "--data", data, "import", ndjson], check=True, capture_output=True)
        jwks = os.path.join(work, "jwks.json")
        shutil.copyfile(os.path.join(ROOT, "tests", "fixtures", "jwks.json"), jwks)
        key = os.path.join(ROOT, "tests", "fixtures", "rsa_private.pem")
        token = rs256_token(key)
        foreign = rs256_token(key, org=OTHER_ORG)
        port = 18290
        server = subprocess.Popen([binary, "serve", "--data", data, "--jwks-file", jwks, "--listen", f"127.0.0.1:{port}",
                                   "--workos-webhook-secret", "whsec_soak", "--stream-threshold", "5000"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_healthy(port)
            # A first full list, so "start" is a warm, serving process.
            urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{port}/api/directories/{DIR_UUID}",
                headers={"Authorization": f"Bearer {token}"})).read()
            start_rss = status_kb(server.pid, "VmRSS") / 1024
            peak = [start_rss]
            done = threading.Event()

            def sample():
                while not done.is_set():
                    peak[0] = max(peak[0], status_kb(server.pid, "VmRSS") / 1024)
                    time.sleep(0.25)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            out = subprocess.run([soak, f"http://127.0.0.1:{port}", "whsec_soak", token, foreign, DIR_UUID,
                                  str(args.seconds), str(args.readers), str(args.writers)],
                                 capture_output=True, text=True)
            done.set()
            sampler.join()
            end_rss = status_kb(server.pid, "VmRSS") / 1024
            print(out.stdout.strip())
            if out.stderr.strip():
                print(out.stderr.strip()[-2000:], file=sys.stderr)
            print(f"rollcall RSS: start {start_rss:.0f} MB, end {end_rss:.0f} MB, peak {peak[0]:.0f} MB "
                  f"(directory of {args.users:,} users plus the writes)")
            if out.returncode != 0:
                raise SystemExit("soak: unexpected errors")
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
                raise SystemExit("soak: rollcall did not stop within 30 s of SIGTERM")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
