#!/usr/bin/env python3
"""rollcall SCIM benchmark: provisioning throughput and filter latency.

Measured, not asserted: it prints what it saw (and fails only when an answer
is wrong — a POST not answered 201, a count that does not add up, a filter
that does not find its one user).

1. POST /Users from --clients (16) concurrent clients, each request a
   distinct user, each answered 201 (once durable: the committer group-
   commits with fsync before answering), --users (20,000) of them: users/s,
   p50/p99/max latency, the server's and this client's CPU over the run,
   and where the server's time went: group commits (count, mean batch,
   mean duration, and the share of the wall time the one committer thread
   spent inside commits, from --metrics-listen) and CPU per server thread
   kind (the committer, the event loops, the rest); then the directory's user_count (Char API `GET /api/directories/{id}`
   with a JWT) and SCIM `GET /Users?count=0` totalResults must both equal
   the number created.
2. A second SCIM directory loaded with --big (100,000) users the same way
   (its load rate is reported too), then, one request at a time on one
   keep-alive connection, p50/p99 over --lookups (2,000) random existing
   users of
       filter=userName eq "…"
       filter=emails[type eq "work"].value eq "…"
       filter=externalId eq "…"
   (each must find exactly that one user), a few of an unindexed filter
   (`displayName eq "…"`, a scan) for contrast, and the whole directory
   listed two ways: SCIM paging (startIndex/count=1000 until done) and the
   Char API `GET /api/directories/{id}/users` (one request, with curl).

    cargo build --release                       # the script builds it too
    python3 benches/scim.py                     # 20,000 POSTs, then 100,000 users
    python3 benches/scim.py --users 5000 --big 20000 --lookups 500
    python3 benches/scim.py --skip-big --json   # only the POST run, JSON on stdout
    python3 benches/scim.py --group-commit-max 1   # one fsync per user, for contrast
    python3 benches/scim.py --skip-big --clients 64  # more writers, bigger group commits

The HTTP client is a few lines of plain asyncio (HTTP/1.1 keep-alive, no
third-party packages) with every request body built before the clock
starts, so on a small machine it leaves the cores to the server; its CPU
is printed next to the server's so a client-bound run shows. Needs curl.
Run from the repository root (any directory works; paths are the script's).
"""
import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import ROOT, sh, status_kb, wait_healthy  # noqa: E402

ORG = "org_01BENCHSCIM000000000000000"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- the server ---------------------------------------------------------------

class Server:
    """`rollcall serve` on a fresh database, on a port the kernel picks."""

    def __init__(self, binary, workdir, extra=()):
        self.binary = binary
        # Metrics on their own port, for the committer's numbers.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.metrics_port = probe.getsockname()[1]
        extra = [*extra, "--metrics-listen", f"127.0.0.1:{self.metrics_port}"]
        self.data = os.path.join(workdir, "db", "rollcall.redb")
        self.log = os.path.join(workdir, "server.log")
        # The Char API's tokens: HS256 with a throwaway secret.
        self.env = dict(os.environ, ROLLCALL_JWT_SECRET=os.urandom(32).hex())
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, "--data", self.data, "serve", "--create", "--listen", "127.0.0.1:0", *extra],
                stdout=log, stderr=subprocess.STDOUT, env=self.env)
        self.addr = None
        deadline = time.time() + 20
        while time.time() < deadline and self.addr is None:
            if self.proc.poll() is not None:
                raise SystemExit(f"rollcall exited at start:\n{open(self.log).read()}")
            m = re.search(r"rollcall listening addr=([0-9.]+:\d+)", open(self.log).read())
            if m:
                self.addr = m.group(1)
            else:
                time.sleep(0.02)
        if self.addr is None:
            raise SystemExit(f"rollcall did not start:\n{open(self.log).read()}")
        self.host, port = self.addr.rsplit(":", 1)
        self.port = int(port)
        wait_healthy(self.port)
        while not os.path.exists(self.data + ".sock"):
            time.sleep(0.02)

    def create_directory(self, name, provider="okta"):
        out = sh(self.binary, "--data", self.data, "directory", "create", "--org", ORG, "--name", name,
                 "--provider", provider, "--json", "--listen", self.addr, env=self.env).stdout
        return json.loads(out)

    def jwt(self):
        return sh(self.binary, "token", "--org", ORG, "--data", self.data, env=self.env).stdout.strip()

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime

    def thread_cpu(self):
        """CPU seconds per thread kind (the committer, the event loops, the
        rest: tokio's blocking pool and the runtime)."""
        out = {}
        for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                with open(f"/proc/{self.proc.pid}/task/{tid}/stat") as f:
                    stat = f.read()
            except FileNotFoundError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            kind = ("committer" if name.startswith("rollcall-commit") else
                    "event loops" if name.startswith("rollcall-loop") else "other")
            out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
        return out

    def commit_stats(self):
        """(commits, jobs, seconds inside commits) so far, from /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        def value(name):
            m = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
            return float(m.group(1)) if m else float("nan")
        return (value("rollcall_commit_duration_seconds_count"), value("rollcall_commit_batch_size_sum"),
                value("rollcall_commit_duration_seconds_sum"))

    def peak_mb(self):
        return status_kb(self.proc.pid, "VmHWM") / 1024

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---- a small HTTP/1.1 keep-alive client ------------------------------------------

class Conn:
    def __init__(self, host, port):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 22)
        return self

    async def request(self, raw: bytes):
        """Sends a whole request; returns (status, body bytes)."""
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        i = lower.find(b"\r\ncontent-length:")
        if i >= 0:
            n = int(lower[i + 17:lower.index(b"\r\n", i + 2)])
            body = await self.reader.readexactly(n)
        elif b"\r\ntransfer-encoding: chunked" in lower:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            body = b"".join(parts)
        else:
            body = b""
        return status, body

    def close(self):
        if self.writer:
            self.writer.close()


def get_request(host_port, path, token):
    return (f"GET {path} HTTP/1.1\r\nHost: {host_port}\r\nAuthorization: Bearer {token}\r\n"
            f"Accept: application/scim+json\r\n\r\n").encode()


def post_request(host_port, path, token, body: bytes):
    return (f"POST {path} HTTP/1.1\r\nHost: {host_port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/scim+json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def user_body(prefix, i):
    """An Okta-shaped user: core attributes, a work email, the enterprise
    extension."""
    return json.dumps({
        "schemas": [USER_SCHEMA, ENTERPRISE],
        "userName": f"{prefix}{i:07d}@bench.example",
        "externalId": f"00u{prefix}{i:07d}",
        "name": {"givenName": f"Given{i}", "familyName": f"Family{i % 997}"},
        "displayName": f"Given{i} Family{i % 997}",
        "emails": [{"value": f"{prefix}{i:07d}@bench.example", "type": "work", "primary": True}],
        "active": True,
        ENTERPRISE: {"department": f"Department {i % 40}", "employeeNumber": str(i)},
    }, separators=(",", ":")).encode()


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


# ---- 1. concurrent POST /Users -------------------------------------------------

async def post_users(server, scim, prefix, n, clients):
    """POSTs n distinct users from `clients` connections; returns the run's
    numbers. Fails unless every answer is 201."""
    base = urllib.parse.urlparse(scim["scim_url"]).path
    requests = [post_request(server.addr, f"{base}/Users", scim["token"], user_body(prefix, i)) for i in range(n)]
    conns = [await Conn(server.host, server.port).open() for _ in range(clients)]
    latencies = []
    failures = []
    nxt = iter(range(n))

    async def worker(conn):
        for i in nxt:
            t0 = time.perf_counter()
            status, body = await conn.request(requests[i])
            latencies.append(time.perf_counter() - t0)
            if status != 201:
                failures.append((i, status, body[:300]))

    srv0, cli0, thr0, com0 = server.cpu_seconds(), os.times(), server.thread_cpu(), server.commit_stats()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    wall = time.perf_counter() - t0
    srv1, cli1, thr1, com1 = server.cpu_seconds(), os.times(), server.thread_cpu(), server.commit_stats()
    commits, jobs, in_commit = (b - a for a, b in zip(com0, com1))
    for c in conns:
        c.close()
    if failures:
        i, status, body = failures[0]
        raise SystemExit(f"{len(failures)} of {n} POSTs not answered 201; first: user {i}: {status} {body!r}")
    latencies.sort()
    return {
        "users": n, "clients": clients, "seconds": wall, "users_per_s": n / wall,
        "p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": latencies[-1] * 1000,
        "server_cpu_pct": (srv1 - srv0) / wall * 100,
        "client_cpu_pct": ((cli1.user - cli0.user) + (cli1.system - cli0.system)) / wall * 100,
        "thread_cpu_pct": {k: (v - thr0.get(k, 0.0)) / wall * 100 for k, v in thr1.items()},
        "commits": commits, "mean_batch": jobs / commits if commits else float("nan"),
        "mean_commit_ms": in_commit / commits * 1000 if commits else float("nan"),
        # Share of the wall time the committer spent inside commits (applying
        # and fsyncing): near 100% means the one writer thread is the limit.
        "committer_busy_pct": in_commit / wall * 100,
    }


async def check_counts(server, scim, jwt, expected):
    """The directory's user_count (Char API) and SCIM totalResults."""
    conn = await Conn(server.host, server.port).open()
    status, body = await conn.request(get_request(server.addr, f"/api/directories/{scim['id']}", jwt))
    if status != 200:
        raise SystemExit(f"GET /api/directories/{scim['id']}: {status} {body[:300]!r}")
    char_count = json.loads(body).get("user_count")
    base = urllib.parse.urlparse(scim["scim_url"]).path
    status, body = await conn.request(get_request(server.addr, f"{base}/Users?count=0", scim["token"]))
    if status != 200:
        raise SystemExit(f"GET /Users?count=0: {status} {body[:300]!r}")
    scim_count = json.loads(body)["totalResults"]
    conn.close()
    if char_count != expected or scim_count != expected:
        raise SystemExit(f"created {expected} users but user_count is {char_count} and SCIM totalResults "
                         f"is {scim_count}")
    return char_count, scim_count


# ---- 2. filters and full listings in a big directory ------------------------------

FILTERS = {
    "userName eq": lambda p, i: f'userName eq "{p}{i:07d}@bench.example"',
    'emails[type eq "work"].value eq': lambda p, i: f'emails[type eq "work"].value eq "{p}{i:07d}@bench.example"',
    "externalId eq": lambda p, i: f'externalId eq "00u{p}{i:07d}"',
}
# Not indexed: every user is read and tested.
SCAN = ("displayName eq (scan)", lambda p, i: f'displayName eq "Given{i} Family{i % 997}"')


async def filter_latency(server, scim, prefix, n, picks, label, make):
    base = urllib.parse.urlparse(scim["scim_url"]).path
    conn = await Conn(server.host, server.port).open()
    latencies = []
    for i in picks:
        q = urllib.parse.quote(make(prefix, i), safe="")
        t0 = time.perf_counter()
        status, body = await conn.request(get_request(server.addr, f"{base}/Users?filter={q}", scim["token"]))
        latencies.append(time.perf_counter() - t0)
        answer = json.loads(body) if status == 200 else None
        if answer is None or answer["totalResults"] != 1 or \
                answer["Resources"][0]["userName"] != f"{prefix}{i:07d}@bench.example":
            raise SystemExit(f"filter {make(prefix, i)!r} did not find its one user: {status} {body[:300]!r}")
    conn.close()
    latencies.sort()
    return {"filter": label, "requests": len(picks), "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000, "max_ms": latencies[-1] * 1000}


async def scim_paging(server, scim, n, page_size):
    base = urllib.parse.urlparse(scim["scim_url"]).path
    conn = await Conn(server.host, server.port).open()
    ids = set()
    pages = 0
    slowest = 0.0
    start = 1
    t0 = time.perf_counter()
    while True:
        p0 = time.perf_counter()
        status, body = await conn.request(
            get_request(server.addr, f"{base}/Users?startIndex={start}&count={page_size}", scim["token"]))
        slowest = max(slowest, time.perf_counter() - p0)
        if status != 200:
            raise SystemExit(f"SCIM page at {start}: {status} {body[:300]!r}")
        page = json.loads(body)
        pages += 1
        got = page["Resources"]
        ids.update(r["id"] for r in got)
        start += len(got)
        if not got or start > page["totalResults"]:
            break
    wall = time.perf_counter() - t0
    conn.close()
    if len(ids) != n:
        raise SystemExit(f"SCIM paging listed {len(ids)} distinct users of {n}")
    return {"how": f"SCIM paging, count={page_size}", "requests": pages, "seconds": wall,
            "slowest_page_ms": slowest * 1000, "users": len(ids)}


def char_list(server, scim, jwt, workdir, n):
    body = os.path.join(workdir, "list.json")
    out = sh("curl", "-s", "-o", body, "-w", "%{http_code} %{time_starttransfer} %{time_total} %{size_download}",
             "-H", f"Authorization: Bearer {jwt}",
             f"http://{server.addr}/api/directories/{scim['id']}/users").stdout.split()
    code, ttfb, total, size = out[0], float(out[1]), float(out[2]), int(out[3])
    if code != "200":
        raise SystemExit(f"Char API list: {code}")
    with open(body, "rb") as f:
        listed = json.load(f)
    os.remove(body)
    users = listed["data"] if isinstance(listed, dict) else listed
    if len(users) != n:
        raise SystemExit(f"the Char API list holds {len(users)} users of {n}")
    return {"how": "Char API, one request", "requests": 1, "seconds": total, "first_byte_ms": ttfb * 1000,
            "bytes": size, "users": len(users)}


# ---- main ---------------------------------------------------------------------------

def build():
    print("building (release)…", file=sys.stderr)
    sh("cargo", "build", "--release", "--quiet", "--bin", "rollcall", cwd=ROOT)
    return os.path.join(ROOT, "target", "release", "rollcall")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20_000, help="users POSTed in the throughput run")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients (one connection each)")
    ap.add_argument("--big", type=int, default=100_000, help="users of the directory the filters run in")
    ap.add_argument("--lookups", type=int, default=2_000, help="requests per indexed filter")
    ap.add_argument("--scans", type=int, default=20, help="requests of the unindexed filter (0: none)")
    ap.add_argument("--page", type=int, default=1000, help="SCIM page size of the full listing")
    ap.add_argument("--skip-big", action="store_true", help="only the POST run")
    ap.add_argument("--group-commit-max", type=int, help="passed to rollcall serve")
    ap.add_argument("--binary", help="this rollcall binary instead of building target/release/rollcall")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object on stdout")
    args = ap.parse_args()
    if not shutil.which("curl"):
        raise SystemExit("curl is required")
    binary = args.binary or build()
    workdir = tempfile.mkdtemp(prefix="rollcall-scim-")
    extra = ["--group-commit-max", str(args.group_commit_max)] if args.group_commit_max else []
    server = None
    results = {"cores": os.cpu_count(), "load_average_at_start": os.getloadavg()[0]}
    try:
        server = Server(binary, workdir, extra)
        jwt = server.jwt()
        log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))

        log(f"POST /Users: {args.users:,} users from {args.clients} clients…")
        small = server.create_directory("scim bench (throughput)")
        post = asyncio.run(post_users(server, small, "tp", args.users, args.clients))
        post["user_count"], post["scim_total"] = asyncio.run(check_counts(server, small, jwt, args.users))
        results["post"] = post

        if not args.skip_big:
            log(f"loading {args.big:,} users into a second directory…")
            big = server.create_directory("scim bench (filters)")
            load = asyncio.run(post_users(server, big, "u", args.big, args.clients))
            asyncio.run(check_counts(server, big, jwt, args.big))
            results["big_load"] = load
            rng = random.Random(args.seed)
            picks = [rng.randrange(args.big) for _ in range(args.lookups)]
            rows = []
            for label, make in FILTERS.items():
                log(f"filter {label}: {len(picks):,} requests…")
                rows.append(asyncio.run(filter_latency(server, big, "u", args.big, picks, label, make)))
            if args.scans:
                log(f"filter {SCAN[0]}: {args.scans} requests…")
                rows.append(asyncio.run(filter_latency(server, big, "u", args.big, picks[:args.scans], *SCAN)))
            results["filters"] = rows
            log("full listings…")
            results["listings"] = [
                asyncio.run(scim_paging(server, big, args.big, args.page)),
                char_list(server, big, jwt, workdir, args.big),
            ]
        results["server_peak_rss_mb"] = server.peak_mb()
    finally:
        if server:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(no_nan(results), indent=2))
    else:
        print_tables(results, args)


def no_nan(v):
    """NaN (a metric the server did not report) as null: JSON has no NaN."""
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, dict):
        return {k: no_nan(x) for k, x in v.items()}
    if isinstance(v, list):
        return [no_nan(x) for x in v]
    return v


def print_tables(r, args):
    p = r["post"]
    print(f"\n{r['cores']} cores, load average {r['load_average_at_start']:.2f} at start; "
          f"server peak RSS {r['server_peak_rss_mb']:.0f} MB\n")
    print("| run | users | clients | users/s | p50 | p99 | max | server CPU | client CPU |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    runs = [("POST /Users", p)] + ([("load of the filter directory", r["big_load"])] if "big_load" in r else [])
    for name, x in runs:
        print(f"| {name} | {x['users']:,} | {x['clients']} | {x['users_per_s']:,.0f} | {x['p50_ms']:.1f} ms | "
              f"{x['p99_ms']:.1f} ms | {x['max_ms']:.1f} ms | {x['server_cpu_pct']:.0f}% | "
              f"{x['client_cpu_pct']:.0f}% |")
    print("\n| run | commits | mean batch | mean commit | committer busy | CPU: committer | event loops | other |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, x in runs:
        t = x["thread_cpu_pct"]
        print(f"| {name} | {x['commits']:,.0f} | {x['mean_batch']:.1f} | {x['mean_commit_ms']:.2f} ms | "
              f"{x['committer_busy_pct']:.0f}% | {t.get('committer', 0):.0f}% | {t.get('event loops', 0):.0f}% | "
              f"{t.get('other', 0):.0f}% |")
    print(f"\nafter the POSTs: Char user_count {p['user_count']:,}, SCIM totalResults {p['scim_total']:,} "
          f"(created {p['users']:,})")
    if "filters" in r:
        print(f"\n{args.big:,}-user directory, one request at a time:\n")
        print("| filter | requests | p50 | p99 | max |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for f in r["filters"]:
            print(f"| `{f['filter']}` | {f['requests']:,} | {f['p50_ms']:.2f} ms | {f['p99_ms']:.2f} ms | "
                  f"{f['max_ms']:.2f} ms |")
        print("\n| full listing | requests | total | detail |")
        print("| --- | ---: | ---: | --- |")
        for x in r["listings"]:
            detail = (f"slowest page {x['slowest_page_ms']:.0f} ms" if "slowest_page_ms" in x
                      else f"first byte {x['first_byte_ms']:.1f} ms, {x['bytes'] / 1e6:.1f} MB")
            print(f"| {x['how']} | {x['requests']:,} | {x['seconds']:.2f} s | {detail} |")


if __name__ == "__main__":
    main()
