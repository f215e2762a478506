#!/usr/bin/env python3
"""rollcall load script: rollcall vs nginx serving the same bytes, in one run.

For each directory size it builds a dataset (examples/dataset), imports it
(timing the import), starts rollcall on it, saves the exact list body rollcall
serves into an nginx root, starts nginx on those bytes (when nginx is
installed), and runs wrk against both with a valid RS256 token on every
request. It prints a table with the ratios and rollcall's peak RSS.

    python3 benches/load.py                       # 10, 1000, 100000 users
    python3 benches/load.py --sizes 10,1000 --duration 5
    python3 benches/load.py --million             # also the 1,000,000-user checks
    python3 benches/load.py --webhooks            # also group commit vs one commit per event
    python3 benches/load.py --sizes '' --metrics  # only the 10-user list, metrics off vs on

Needs: wrk and (for the comparison) nginx — `apt-get install wrk nginx-light`;
openssl (to sign the RS256 token). Run from the repository root.
"""
import argparse
import base64
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORG = "org_01BENCHACME00000000000000"
def derived_id(workos_id: str, created_at: str) -> str:
    """The id rollcall derives for a WorkOS object (CONTRACT.md "Determinism"):
    version-7 layout, created_at's milliseconds, 74 bits of SHA-256(workos id)."""
    import datetime
    import hashlib
    ms = int(datetime.datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp() * 1000)
    b = bytearray(ms.to_bytes(6, "big") + hashlib.sha256(workos_id.encode()).digest()[:10])
    b[6] = 0x70 | (b[6] & 0x0F)
    b[8] = 0x80 | (b[8] & 0x3F)
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# The dataset's directory (examples/common/dataset.rs).
DIR_UUID = derived_id("directory_01BENCH00000000000001", "2026-01-01T00:00:00.000Z")
PATH = f"/api/directories/{DIR_UUID}/users"


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rs256_token(key_path: str, org: str = ORG) -> str:
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "test-rsa-1"}).encode())
    claims = {"sub": "user_bench", "org_id": org, "iat": int(time.time()), "exp": int(time.time()) + 86400}
    payload = b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key_path], input=signing_input,
                         check=True, capture_output=True).stdout
    return f"{header}.{payload}.{b64url(sig)}"


def wait_healthy(port: int, timeout: float = 10.0) -> float:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return time.time() - t0
        except Exception:
            time.sleep(0.002)
    raise SystemExit(f"nothing healthy on port {port}")


def status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def units(value: str) -> float:
    m = re.match(r"([\d.]+)([KMG]?B)?", value)
    n = float(m.group(1))
    return n * {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, None: 1}[m.group(2)]


def wrk(url: str, token: str, threads: int, conns: int, duration: int):
    out = sh("wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "-H", f"Authorization: Bearer {token}", url).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bps = units(re.search(r"Transfer/sec:\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} errors against {url}:\n{out}")
    return rps, bps


STARTED = []


class Rollcall:
    def __init__(self, binary, data, jwks, port, extra=()):
        self.port = port
        t0 = time.time()
        self.proc = subprocess.Popen(
            [binary, "serve", "--data", data, "--jwks-file", jwks, "--listen", f"127.0.0.1:{port}", *extra],
            stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        STARTED.append(self.proc)
        wait_healthy(port)
        self.start_ms = (time.time() - t0) * 1000
        if self.proc.poll() is not None:
            raise SystemExit(f"rollcall exited at start (is port {port} taken?)")

    def rss_kb(self):
        return status_kb(self.proc.pid, "VmRSS")

    def peak_kb(self):
        return status_kb(self.proc.pid, "VmHWM")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


class Nginx:
    def __init__(self, workdir, port):
        self.conf = os.path.join(workdir, "nginx.conf")
        self.root = os.path.join(workdir, "www")
        tmp = os.path.join(workdir, "nginx-tmp")
        os.makedirs(tmp, exist_ok=True)
        with open(self.conf, "w") as f:
            f.write(f"""worker_processes auto; daemon off; pid {workdir}/nginx.pid; error_log {workdir}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 10000000;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  server {{ listen 127.0.0.1:{port}; root {self.root}; location / {{ types {{ }} default_type application/json; }} }} }}
""")
        self.port = port
        self.proc = None

    def serve(self, body_path):
        dest = os.path.join(self.root, PATH.lstrip("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(body_path, dest)
        for d, _, files in os.walk(self.root):
            os.chmod(d, 0o755)
            for f in files:
                os.chmod(os.path.join(d, f), 0o644)
        if self.proc is None:
            self.proc = subprocess.Popen(["nginx", "-c", self.conf], stderr=subprocess.DEVNULL)
            time.sleep(0.5)

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGQUIT)
            self.proc.wait(timeout=10)


def build():
    print("building (release)…", file=sys.stderr)
    sh("cargo", "build", "--release", "--quiet", "--bin", "rollcall", "--example", "dataset", "--example", "webhook_load",
       cwd=ROOT)
    target = os.path.join(ROOT, "target", "release")
    return os.path.join(target, "rollcall"), os.path.join(target, "examples", "dataset"), \
        os.path.join(target, "examples", "webhook_load")


def dataset(gen, binary, workdir, n):
    ndjson = os.path.join(workdir, f"users-{n}.ndjson")
    with open(ndjson, "w") as f:
        subprocess.run([gen, str(n)], stdout=f, check=True)
    data = os.path.join(workdir, f"rollcall-{n}.redb")
    t0 = time.time()
    sh(binary, "--data", data, "import", ndjson)
    took = time.time() - t0
    os.remove(ndjson)
    return data, took


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,1000,100000")
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run (small lists)")
    ap.add_argument("--big-duration", type=int, default=30, help="seconds per wrk run (100k users)")
    ap.add_argument("--million", action="store_true")
    ap.add_argument("--webhooks", action="store_true")
    ap.add_argument("--webhook-events", type=int, default=20000)
    ap.add_argument("--metrics", action="store_true",
                    help="also the 10-user list's req/s with --metrics-listen off and on, in turn")
    ap.add_argument("--rounds", type=int, default=9, help="off/on pairs for --metrics (medians reported)")
    args = ap.parse_args()
    for tool in ("wrk", "openssl"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is required (apt-get install wrk)")
    have_nginx = shutil.which("nginx") is not None
    binary, gen, webhook_load = build()
    workdir = tempfile.mkdtemp(prefix="rollcall-load-")
    os.chmod(workdir, 0o755)  # nginx workers run as an unprivileged user
    jwks = os.path.join(workdir, "jwks.json")
    shutil.copyfile(os.path.join(ROOT, "tests", "fixtures", "jwks.json"), jwks)
    token = rs256_token(os.path.join(ROOT, "tests", "fixtures", "rsa_private.pem"))
    nginx = Nginx(workdir, 18181) if have_nginx else None
    rows = []
    try:
        for n in [int(s) for s in args.sizes.split(",") if s]:
            data, import_s = dataset(gen, binary, workdir, n)
            big = n >= 100_000
            threads, conns, dur = (2, 8, args.big_duration) if big else (2, 32, args.duration)
            server = Rollcall(binary, data, jwks, 18180)
            body = os.path.join(workdir, "body.json")
            with urllib.request.urlopen(urllib.request.Request(
                    f"http://127.0.0.1:18180{PATH}", headers={"Authorization": f"Bearer {token}"})) as r, \
                    open(body, "wb") as f:
                shutil.copyfileobj(r, f, 1 << 20)
            size = os.path.getsize(body)
            ng = (None, None)
            if nginx:
                nginx.serve(body)
                wrk(f"http://127.0.0.1:18181{PATH}", token, threads, conns, 2)
                ng = wrk(f"http://127.0.0.1:18181{PATH}", token, threads, conns, dur)
            wrk(f"http://127.0.0.1:18180{PATH}", token, threads, conns, 2)
            rc = wrk(f"http://127.0.0.1:18180{PATH}", token, threads, conns, dur)
            rows.append(dict(n=n, size=size, conns=conns, dur=dur, nginx=ng, rollcall=rc,
                             peak_mb=server.peak_kb() / 1024, import_rate=n / import_s))
            server.stop()
            os.remove(data)
        if rows:
            print_table(rows)
        if args.metrics:
            metrics_cost(binary, gen, workdir, jwks, token, args.duration, args.rounds)
        if args.million:
            million(binary, gen, workdir, jwks, token)
        if args.webhooks:
            webhooks(binary, webhook_load, workdir, jwks, args.webhook_events)
    finally:
        for proc in STARTED:
            if proc.poll() is None:
                proc.kill()
        if nginx:
            nginx.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def print_table(rows):
    print("\n| users | body | wrk | nginx req/s | rollcall req/s | req/s ratio | nginx bytes/s | rollcall bytes/s | bytes/s ratio | rollcall peak RSS | import |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        (nr, nb), (rr, rb) = r["nginx"], r["rollcall"]
        ratio = lambda a, b: f"{a / b:.2f}" if b else "n/a"
        gbs = lambda b: f"{b / 1024 ** 3:.2f} GB/s" if b else "n/a"
        print(f"| {r['n']:,} | {r['size'] / 1e6:.2f} MB | -t2 -c{r['conns']} -d{r['dur']}s | "
              f"{nr or 0:,.0f} | {rr:,.0f} | {ratio(rr, nr)} | {gbs(nb)} | {gbs(rb)} | {ratio(rb, nb)} | "
              f"{r['peak_mb']:.0f} MB | {r['import_rate']:,.0f} users/s |")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def metrics_cost(binary, gen, workdir, jwks, token, duration, rounds):
    """The 10-user list's req/s without and with --metrics-listen: two
    servers on copies of one database, both up for the whole comparison,
    measured in turn (off, on, off, on …, the order swapped every round) so
    a neighbour's load falls on both alike; medians reported, and the median
    of each round's on/off ratio."""
    data, _ = dataset(gen, binary, workdir, 10)
    copy = os.path.join(workdir, "rollcall-10-metrics.redb")
    shutil.copyfile(data, copy)
    servers = {
        "off": Rollcall(binary, data, jwks, 18180),
        "on": Rollcall(binary, copy, jwks, 18182, ("--metrics-listen", "127.0.0.1:18190")),
    }
    urls = {mode: f"http://127.0.0.1:{s.port}{PATH}" for mode, s in servers.items()}
    for url in urls.values():
        wrk(url, token, 2, 32, 2)
    runs = {"off": [], "on": []}
    ratios = []
    for i in range(rounds):
        order = ("off", "on") if i % 2 == 0 else ("on", "off")
        got = {}
        for mode in order:
            got[mode], _ = wrk(urls[mode], token, 2, 32, duration)
            runs[mode].append(got[mode])
        ratios.append(got["on"] / got["off"])
    counted = re.search(r'rollcall_http_requests_total\{route="/api/directories/\{id\}/users",'
                        r'method="GET",status="200"\} (\d+)', scrape(18190))
    if not counted or int(counted.group(1)) < sum(runs["on"]) * duration * 0.9:
        raise SystemExit("the metrics did not count the run's requests")
    for server in servers.values():
        server.stop()
    median = lambda xs: sorted(xs)[len(xs) // 2]
    off, on = median(runs["off"]), median(runs["on"])
    each = lambda xs: ", ".join(f"{x:,.0f}" for x in xs)
    print(f"\n10-user list, wrk -t2 -c32 -d{duration}s, {rounds} rounds, the two servers in turn:"
          f"\n  metrics off: {off:,.0f} req/s (median of {each(runs['off'])})"
          f"\n  metrics on:  {on:,.0f} req/s (median of {each(runs['on'])})"
          f"\n  on/off: {on / off:.3f} of the medians; {median(ratios):.3f} median of the rounds' ratios "
          f"({', '.join(f'{r:.3f}' for r in ratios)})")
    os.remove(data)
    os.remove(copy)


def million(binary, gen, workdir, jwks, token):
    n = 1_000_000
    data, import_s = dataset(gen, binary, workdir, n)
    server = Rollcall(binary, data, jwks, 18180)
    time.sleep(0.3)
    idle_mb = server.rss_kb() / 1024
    out = sh("curl", "-s", "-o", "/dev/null", "-w", "%{time_starttransfer} %{time_total} %{size_download}",
             "-H", f"Authorization: Bearer {token}", f"http://127.0.0.1:18180{PATH}").stdout.split()
    ttfb, total, size = float(out[0]), float(out[1]), int(out[2])
    peak_mb = server.peak_kb() / 1024
    first = sh("curl", "-s", "-o", "/dev/null", "-w", "%{time_total}", "-H", f"Authorization: Bearer {token}",
               f"http://127.0.0.1:18180{PATH}?limit=100").stdout
    server.stop()
    print(f"\n1,000,000 users: import {n / import_s:,.0f} users/s ({import_s:.1f} s); "
          f"start {server.start_ms:.0f} ms; idle RSS {idle_mb:.0f} MB; full list {size / 1e6:.0f} MB "
          f"first byte {ttfb * 1000:.1f} ms, all in {total:.2f} s, peak RSS {peak_mb:.0f} MB; "
          f"a 100-user page {float(first) * 1000:.1f} ms")
    os.remove(data)


def webhooks(binary, webhook_load, workdir, jwks, events):
    print()
    for gc, label in ((512, "group commit"), (1, "one commit per event")):
        data = os.path.join(workdir, f"webhooks-{gc}.redb")
        server = Rollcall(binary, data, jwks, 18183,
                          ("--workos-webhook-secret", "whsec_bench", "--group-commit-max", str(gc)))
        out = sh(webhook_load, "http://127.0.0.1:18183", "whsec_bench", str(events), "32").stdout.strip()
        server.stop()
        print(f"webhooks, {label}: {out}")


if __name__ == "__main__":
    main()
