#!/usr/bin/env python3
"""rollcall load script: rollcall vs nginx serving the same bytes, in one run.

For each directory size it builds a dataset (examples/dataset), imports it
(timing the import), starts rollcall on it, saves the exact list body rollcall
serves into an nginx root, starts nginx on those bytes (when nginx is
installed), and runs wrk against both with a valid RS256 token on every
request. It prints markdown tables with req/s, bytes/s, the ratios and
rollcall's peak RSS (VmHWM):

- plain: no Accept-Encoding, both serve the identity body;
- gzip (--gzip, the default): rollcall's body fetched with
  `Accept-Encoding: gzip` is saved exactly as sent (and checked to gunzip to
  the plain body) as `<file>.gz` next to the plain one, nginx serves it with
  `gzip_static on`, and wrk sends `Accept-Encoding: gzip` to both. If rollcall
  answers without Content-Encoding (compression not there yet) the table says
  so, nginx serves a body gzipped here (level 6) and rollcall's side is n/a;
- first read after a change (--first-read sizes, default 100000): the median
  time of a full streamed read (curl) against the time of the read right
  after a signed `dsync.user.updated` webhook changed one user of the
  directory (acknowledged after its commit), over a few rounds; the timed
  read's ETag must differ from the one before, or the script stops.

    python3 benches/load.py                       # 10, 1000, 100000 users
    python3 benches/load.py --sizes 10,1000 --duration 5
    python3 benches/load.py --sizes 100000 --big-duration 10
    python3 benches/load.py --million             # also 1,000,000 users: curl checks, then wrk plain and gzip
    python3 benches/load.py --no-gzip             # no gzip comparison
    python3 benches/load.py --first-read ''       # no first-read-after-a-change measurement
    python3 benches/load.py --webhooks            # also group commit vs one commit per event
    python3 benches/load.py --sizes '' --metrics  # only the 10-user list, metrics off vs on

Lists of 100,000 users or more run wrk -t2 -c8 for --big-duration seconds,
smaller ones -t2 -c32 for --duration seconds.

Needs: wrk, curl and (for the comparison) nginx with the gzip_static module
(`nginx -V` shows --with-http_gzip_static_module; Debian's nginx-light has
it) — `apt-get install wrk curl nginx-light`; openssl (to sign the RS256
token). Run from the repository root.
"""
import argparse
import base64
import gzip
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORG = "org_01BENCHACME00000000000000"
WEBHOOK_SECRET = "whsec_bench"


def derived_id(workos_id: str, created_at: str) -> str:
    """The id rollcall derives for a WorkOS object (CONTRACT.md "Determinism"):
    version-7 layout, created_at's milliseconds, 74 bits of SHA-256(workos id)."""
    import datetime
    ms = int(datetime.datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp() * 1000)
    b = bytearray(ms.to_bytes(6, "big") + hashlib.sha256(workos_id.encode()).digest()[:10])
    b[6] = 0x70 | (b[6] & 0x0F)
    b[8] = 0x80 | (b[8] & 0x3F)
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# The dataset's directory (examples/common/dataset.rs).
DIR_UUID = derived_id("directory_01BENCH00000000000001", "2026-01-01T00:00:00.000Z")
PATH = f"/api/directories/{DIR_UUID}/users"
RC_PORT, NGINX_PORT = 18180, 18181


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
    m = re.match(r"([\d.]+)([KMGT]?B)?", value)
    n = float(m.group(1))
    return n * {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4, None: 1}[m.group(2)]


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def wrk(url: str, token: str, threads: int, conns: int, duration: int, headers=(), timeout: int = 2):
    """req/s and bytes/s (as wrk counts them: the bytes read off the socket)."""
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", f"--timeout={timeout}s",
           "-H", f"Authorization: Bearer {token}"]
    for h in headers:
        cmd += ["-H", h]
    out = sh(*cmd, url).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bps = units(re.search(r"Transfer/sec:\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} errors against {url}:\n{out}")
    timeouts = re.search(r"Socket errors:.*timeout (\d+)", out)
    if timeouts and int(timeouts.group(1)):
        print(f"warning: wrk saw {timeouts.group(1)} timeouts (--timeout={timeout}s) against {url}",
              file=sys.stderr)
    return rps, bps


def fetch(url: str, token: str, dest=None, headers=None):
    """GETs url with the token (urllib sends `Accept-Encoding: identity` unless
    told otherwise, and never decodes), saving the body exactly as sent to
    dest; returns (headers, bytes received)."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}", **(headers or {})})
    with urllib.request.urlopen(req, timeout=600) as r:
        got = 0
        f = open(dest, "wb") if dest else None
        try:
            while True:
                chunk = r.read(1 << 20)
                if not chunk:
                    break
                got += len(chunk)
                if f:
                    f.write(chunk)
        finally:
            if f:
                f.close()
        return r.headers, got


def gunzips_to(gz_path: str, plain_path: str) -> bool:
    """Whether gz_path decompresses to exactly the bytes of plain_path."""
    try:
        with gzip.open(gz_path, "rb") as g, open(plain_path, "rb") as p:
            while True:
                a = g.read(1 << 20)
                if not a:
                    return p.read(1) == b""
                if p.read(len(a)) != a:
                    return False
    except (OSError, EOFError):
        return False


def gzip_file(src: str, dest: str, level: int = 6):
    with open(src, "rb") as i, gzip.GzipFile(dest, "wb", compresslevel=level, mtime=0) as o:
        shutil.copyfileobj(i, o, 1 << 20)


def same_bytes(a: str, b: str) -> bool:
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(1 << 20)
            if x != fb.read(1 << 20):
                return False
            if not x:
                return True


STARTED = []


class Rollcall:
    def __init__(self, binary, data, jwks, port, extra=()):
        self.port, self.data = port, data
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


def nginx_has_gzip_static() -> bool:
    out = subprocess.run(["nginx", "-V"], capture_output=True, text=True)
    return "--with-http_gzip_static_module" in out.stdout + out.stderr


class Nginx:
    def __init__(self, workdir, port, gzip_static):
        self.conf = os.path.join(workdir, "nginx.conf")
        self.root = os.path.join(workdir, "www")
        self.gzip_static = gzip_static
        tmp = os.path.join(workdir, "nginx-tmp")
        os.makedirs(tmp, exist_ok=True)
        # gzip_static: a request accepting gzip gets `<file>.gz` as sent, with
        # Content-Encoding: gzip (and, gzip_vary, Vary: Accept-Encoding).
        gz = "gzip_static on; gzip_vary on;" if gzip_static else ""
        with open(self.conf, "w") as f:
            f.write(f"""worker_processes auto; daemon off; pid {workdir}/nginx.pid; error_log {workdir}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 10000000; {gz}
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  server {{ listen 127.0.0.1:{port}; root {self.root}; location / {{ types {{ }} default_type application/json; }} }} }}
""")
        self.port = port
        self.proc = None
        self.dest = os.path.join(self.root, PATH.lstrip("/"))

    @staticmethod
    def _place(src, dest):
        if os.path.lexists(dest):
            os.remove(dest)
        try:
            os.link(src, dest)  # same filesystem: no copy of a big body
        except OSError:
            shutil.copyfile(src, dest)

    def serve(self, body_path, gz_path=None):
        """Serves body_path at PATH and, when given, gz_path as PATH.gz
        (without, any earlier .gz is removed)."""
        os.makedirs(os.path.dirname(self.dest), exist_ok=True)
        self._place(body_path, self.dest)
        if gz_path:
            self._place(gz_path, self.dest + ".gz")
        elif os.path.lexists(self.dest + ".gz"):
            os.remove(self.dest + ".gz")
        for d, _, files in os.walk(self.root):
            os.chmod(d, 0o755)
            for f in files:
                os.chmod(os.path.join(d, f), 0o644)
        if self.proc is None:
            self.proc = subprocess.Popen(["nginx", "-c", self.conf], stderr=subprocess.DEVNULL)
            STARTED.append(self.proc)
            wait_port = time.time()
            while time.time() - wait_port < 10:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1)
                    break
                except urllib.error.HTTPError:
                    break  # a 404 from nginx: it is up
                except Exception:
                    time.sleep(0.05)

    def stop(self):
        if self.proc and self.proc.poll() is None:
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


class Bench:
    """What every size's comparison shares."""

    def __init__(self, args, binary, gen, workdir, jwks, token, nginx):
        self.args, self.binary, self.gen, self.workdir = args, binary, gen, workdir
        self.jwks, self.token, self.nginx = jwks, token, nginx
        self.plain_rows, self.gzip_rows, self.first_reads = [], [], []

    def settings(self, n):
        """wrk threads, connections, seconds and timeout for an n-user list."""
        if n >= 100_000:
            return 2, 8, self.args.big_duration, 120
        return 2, 32, self.args.duration, 10

    def compare(self, n, server, import_s):
        """The plain and the gzip comparison of the n-user list, then (when
        asked for this size) the first read after a change."""
        threads, conns, dur, timeout = self.settings(n)
        rc_url, ng_url = f"http://127.0.0.1:{RC_PORT}{PATH}", f"http://127.0.0.1:{NGINX_PORT}{PATH}"
        body = os.path.join(self.workdir, f"body-{n}.json")
        hdrs, size = fetch(rc_url, self.token, body)
        if hdrs.get("Content-Encoding", "identity") != "identity":
            raise SystemExit(f"rollcall answered a request without Accept-Encoding with "
                             f"Content-Encoding: {hdrs.get('Content-Encoding')}")
        plain_etag = hdrs.get("ETag")
        ng = (None, None)
        if self.nginx:
            self.nginx.serve(body)
            wrk(ng_url, self.token, threads, conns, 2, timeout=timeout)
            ng = wrk(ng_url, self.token, threads, conns, dur, timeout=timeout)
        wrk(rc_url, self.token, threads, conns, 2, timeout=timeout)
        rc = wrk(rc_url, self.token, threads, conns, dur, timeout=timeout)
        self.plain_rows.append(dict(n=n, size=size, conns=conns, dur=dur, nginx=ng, rollcall=rc,
                                    peak_mb=server.peak_kb() / 1024, import_rate=n / import_s if import_s else 0))
        if self.args.gzip:
            self.compare_gzip(n, server, body, size, plain_etag, rc_url, ng_url, threads, conns, dur, timeout)
        if n in self.args.first_read_sizes:
            self.first_read(n, rc_url, server)
        for f in (body, body + ".gz"):
            if os.path.exists(f):
                os.remove(f)

    def compare_gzip(self, n, server, body, size, plain_etag, rc_url, ng_url, threads, conns, dur, timeout):
        gz = body + ".gz"
        hdrs, gz_size = fetch(rc_url, self.token, gz, {"Accept-Encoding": "gzip"})
        enc = hdrs.get("Content-Encoding") or "identity"
        row = dict(n=n, size=size, conns=conns, dur=dur, enc=enc, vary=hdrs.get("Vary") or "—",
                   etag_differs=None, nginx=(None, None), rollcall=None, note="")
        rollcall_gzip = enc == "gzip"
        if rollcall_gzip:
            row["etag_differs"] = hdrs.get("ETag") != plain_etag if hdrs.get("ETag") and plain_etag else None
            if not gunzips_to(gz, body):
                print(f"ERROR: {n} users: rollcall's gzip body ({gz_size:,} bytes) does not gunzip to the "
                      f"plain body it served ({size:,} bytes); its gzip run is skipped", file=sys.stderr)
                rollcall_gzip = False
                row["note"] = "rollcall's gzip body ≠ plain body: nginx serves a body gzipped here"
                gzip_file(body, gz)
        else:
            print(f"{n} users: rollcall answered Accept-Encoding: gzip with Content-Encoding: {enc} "
                  f"(not gzip; compression not implemented yet?): nginx serves a body gzipped here (level 6), "
                  f"rollcall's gzip side is n/a", file=sys.stderr)
            row["note"] = "nginx serves a body gzipped here (level 6)"
            gzip_file(body, gz)
        row["gz_size"] = os.path.getsize(gz)
        row["zstd"] = self.probe_zstd(rc_url, size)
        if self.nginx and self.nginx.gzip_static:
            self.nginx.serve(body, gz)
            check = os.path.join(self.workdir, "nginx-check.gz")
            ng_hdrs, _ = fetch(ng_url, self.token, check, {"Accept-Encoding": "gzip"})
            if ng_hdrs.get("Content-Encoding") != "gzip" or not same_bytes(check, gz):
                raise SystemExit(f"nginx did not answer the .gz with Content-Encoding: gzip "
                                 f"(got {ng_hdrs.get('Content-Encoding')!r}); see {self.conf_hint()}")
            os.remove(check)
            wrk(ng_url, self.token, threads, conns, 2, ("Accept-Encoding: gzip",), timeout)
            row["nginx"] = wrk(ng_url, self.token, threads, conns, dur, ("Accept-Encoding: gzip",), timeout)
        if rollcall_gzip:
            wrk(rc_url, self.token, threads, conns, 2, ("Accept-Encoding: gzip",), timeout)
            row["rollcall"] = wrk(rc_url, self.token, threads, conns, dur, ("Accept-Encoding: gzip",), timeout)
        row["peak_mb"] = server.peak_kb() / 1024
        self.gzip_rows.append(row)

    def conf_hint(self):
        return self.nginx.conf if self.nginx else "nginx.conf"

    def probe_zstd(self, rc_url, size):
        """What rollcall answers to Accept-Encoding: zstd (one request)."""
        try:
            hdrs, got = fetch(rc_url, self.token, None, {"Accept-Encoding": "zstd"})
        except Exception as e:
            return f"error: {e}"
        enc = hdrs.get("Content-Encoding") or "identity"
        return enc if enc == "identity" else f"{enc}, {got / size * 100:.1f}%"

    def curl_read(self, url):
        """One full read with curl: (total s, first byte s, bytes, ETag)."""
        hdr = os.path.join(self.workdir, "curl-headers")
        out = sh("curl", "-s", "-o", "/dev/null", "-D", hdr,
                 "-w", "%{http_code} %{time_starttransfer} %{time_total} %{size_download}",
                 "-H", f"Authorization: Bearer {self.token}", url).stdout.split()
        if out[0] != "200":
            raise SystemExit(f"curl got {out[0]} from {url}")
        with open(hdr) as f:
            etag = next((line.split(":", 1)[1].strip() for line in f if line.lower().startswith("etag:")), None)
        return float(out[2]), float(out[1]), int(out[3]), etag

    def post_change(self, port, user, k):
        """One signed dsync.user.updated webhook changing user (its title and
        updated_at); returns the outcome rollcall acknowledged."""
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        changed = json.loads(json.dumps(user))
        changed.pop("rollcall", None)
        changed["raw_attributes"]["title"] = f"Benchmark change {k} at {stamp}"
        changed["updated_at"] = stamp
        event = json.dumps({"object": "event", "id": f"event_01BENCHFIRSTREAD{int(now * 1e6)}{k:02d}",
                            "event": "dsync.user.updated", "data": changed, "created_at": stamp}).encode()
        t = str(int(time.time() * 1000))
        sig = hmac.new(WEBHOOK_SECRET.encode(), t.encode() + b"." + event, hashlib.sha256).hexdigest()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/webhooks/workos", data=event, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "WorkOS-Signature": f"t={t}, v1={sig}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read()).get("outcome")
        except urllib.error.HTTPError as e:
            raise SystemExit(f"the webhook was refused: {e.code} {e.read()[:500]!r}")

    def first_read(self, n, url, server):
        """Median full read (a) against the read right after a change (b),
        and a read streamed from a database snapshot (s: how every large
        list was sent before body files, `--body-files-mb 0`), on a copy
        of the data once the changes are done."""
        rounds, reads = self.args.first_read_rounds, self.args.first_read_rounds
        # Users of the dataset, as generated (the first ones are the same for
        # any n); only users without an AuthKit link, so the change is the title.
        lines = sh(self.gen, "40").stdout.splitlines()[1:]
        users = [u for u in (json.loads(line) for line in lines) if not (u.get("rollcall") or {}).get("user_id")]
        if len(users) < rounds:
            raise SystemExit("not enough unlinked users in the first 40 of the dataset")
        self.curl_read(url)  # warm (the body as the caches keep it)
        normal = [self.curl_read(url) for _ in range(reads)]
        etag = normal[-1][3]
        after, second = [], []
        for k in range(rounds):
            outcome = self.post_change(RC_PORT, users[k], k)
            if outcome != "applied":
                raise SystemExit(f"the change to {users[k]['id']} was not applied: outcome {outcome!r}")
            got = self.curl_read(url)
            if got[3] == etag or got[3] is None:
                raise SystemExit(f"the list's ETag did not change after the change ({etag}): not measuring")
            after.append(got)
            second.append(self.curl_read(url))
            if second[-1][3] != got[3]:
                raise SystemExit("the second read after the change has another ETag than the first")
            etag = got[3]
        copy = os.path.join(self.workdir, "snapshot-stream.redb")
        shutil.copyfile(server.data, copy)
        snap_port = RC_PORT + 7
        streamer = Rollcall(self.binary, copy, self.jwks, snap_port, ("--body-files-mb", "0"))
        snap_url = url.replace(f":{RC_PORT}/", f":{snap_port}/")
        self.curl_read(snap_url)
        snapshot = [self.curl_read(snap_url) for _ in range(reads)]
        streamer.stop()
        os.remove(copy)
        self.first_reads.append(dict(n=n, size=normal[0][2], normal=normal, after=after, second=second,
                                     snapshot=snapshot))


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "n/a"


def gbs(b):
    if not b:
        return "n/a"
    return f"{b / 1024 ** 3:.2f} GB/s" if b >= 0.1 * 1024 ** 3 else f"{b / 1024 ** 2:.1f} MB/s"


def rate(x):
    if x is None:
        return "n/a"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def mb(size):
    return f"{size / 1e3:.1f} KB" if size < 100_000 else f"{size / 1e6:.2f} MB"


def print_table(rows):
    print("\nPlain (no Accept-Encoding):\n")
    print("| users | body | wrk | nginx req/s | rollcall req/s | req/s ratio | nginx bytes/s | rollcall bytes/s | bytes/s ratio | rollcall peak RSS | import |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        (nr, nb), (rr, rb) = r["nginx"], r["rollcall"]
        imp = f"{r['import_rate']:,.0f} users/s" if r["import_rate"] else "—"
        print(f"| {r['n']:,} | {mb(r['size'])} | -t2 -c{r['conns']} -d{r['dur']}s | "
              f"{rate(nr)} | {rate(rr)} | {ratio(rr, nr)} | {gbs(nb)} | {gbs(rb)} | {ratio(rb, nb)} | "
              f"{r['peak_mb']:.0f} MB | {imp} |")


def print_gzip_table(rows):
    print("\ngzip (wrk -H 'Accept-Encoding: gzip'; bytes/s are compressed bytes on the wire):\n")
    print("| users | plain body | gzip body | gzip/plain | rollcall Content-Encoding | Vary | ETag ≠ plain | zstd answer "
          "| wrk | nginx req/s | rollcall req/s | req/s ratio | nginx bytes/s | rollcall bytes/s | bytes/s ratio "
          "| rollcall peak RSS |")
    print("| ---: | ---: | ---: | ---: | --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    notes = []
    for r in rows:
        nr, nb = r["nginx"]
        rr, rb = r["rollcall"] or (None, None)
        differs = {True: "yes", False: "NO", None: "—"}[r["etag_differs"]]
        print(f"| {r['n']:,} | {mb(r['size'])} | {mb(r['gz_size'])} | {r['gz_size'] / r['size'] * 100:.1f}% | "
              f"{r['enc']} | {r['vary']} | {differs} | {r['zstd']} | -t2 -c{r['conns']} -d{r['dur']}s | "
              f"{rate(nr)} | {rate(rr)} | {ratio(rr, nr)} | {gbs(nb)} | {gbs(rb)} | {ratio(rb, nb)} | "
              f"{r['peak_mb']:.0f} MB |")
        if r["note"]:
            notes.append(f"{r['n']:,} users: {r['note']}")
    if notes:
        print()
    for note in notes:
        print(f"- {note}")


def print_first_reads(results):
    if not results:
        return
    print("\nFirst full read after a change (curl, one client; a signed dsync.user.updated webhook "
          "changes one user's title, acknowledged after its commit, then the list is read at once):\n")
    print("| users | body | normal read (a) | first byte | first read after a change (b) | first byte "
          "| second read after | (b)/(a) | streamed from a snapshot (s) | (b)/(s) | rounds |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        a = median([x[0] for x in r["normal"]])
        a_fb = median([x[1] for x in r["normal"]])
        b = median([x[0] for x in r["after"]])
        b_fb = median([x[1] for x in r["after"]])
        c = median([x[0] for x in r["second"]])
        st = median([x[0] for x in r["snapshot"]])
        print(f"| {r['n']:,} | {mb(r['size'])} | {a * 1000:.1f} ms | {a_fb * 1000:.1f} ms | {b * 1000:.1f} ms | "
              f"{b_fb * 1000:.1f} ms | {c * 1000:.1f} ms | {b / a:.2f} | {st * 1000:.1f} ms | {b / st:.2f} | "
              f"{len(r['after'])} |")
        each = lambda xs: ", ".join(f"{x[0] * 1000:.0f}" for x in xs)
        print(f"\n{r['n']:,} users, each read in ms — normal: {each(r['normal'])}; first after a change: "
              f"{each(r['after'])}; second after: {each(r['second'])}; from a snapshot: {each(r['snapshot'])}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,1000,100000")
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run (small lists)")
    ap.add_argument("--big-duration", type=int, default=30,
                    help="seconds per wrk run (100,000 users and more, 1,000,000 included)")
    ap.add_argument("--million", action="store_true",
                    help="also 1,000,000 users: import, start, one curl read, then wrk plain and gzip vs nginx")
    ap.add_argument("--gzip", action=argparse.BooleanOptionalAction, default=True,
                    help="the gzip comparison for every size (default on)")
    ap.add_argument("--first-read", default="100000",
                    help="sizes on which to time the first read after a change ('' for none)")
    ap.add_argument("--first-read-rounds", type=int, default=5,
                    help="normal reads, and changes each followed by a read, for --first-read")
    ap.add_argument("--webhooks", action="store_true")
    ap.add_argument("--webhook-events", type=int, default=20000)
    ap.add_argument("--metrics", action="store_true",
                    help="also the 10-user list's req/s with --metrics-listen off and on, in turn")
    ap.add_argument("--rounds", type=int, default=9, help="off/on pairs for --metrics (medians reported)")
    args = ap.parse_args()
    args.first_read_sizes = {int(s) for s in args.first_read.split(",") if s}
    for tool in ("wrk", "openssl", "curl"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is required (apt-get install wrk curl openssl)")
    have_nginx = shutil.which("nginx") is not None
    if not have_nginx:
        print("nginx is not installed: the nginx columns are n/a (apt-get install nginx-light)", file=sys.stderr)
    gzip_static = have_nginx and nginx_has_gzip_static()
    if have_nginx and args.gzip and not gzip_static:
        print("nginx has no gzip_static module (`nginx -V` lacks --with-http_gzip_static_module): the gzip "
              "comparison's nginx columns are n/a — apt-get install nginx-full (or nginx-extras)", file=sys.stderr)
    binary, gen, webhook_load = build()
    workdir = tempfile.mkdtemp(prefix="rollcall-load-")
    os.chmod(workdir, 0o755)  # nginx workers run as an unprivileged user
    jwks = os.path.join(workdir, "jwks.json")
    shutil.copyfile(os.path.join(ROOT, "tests", "fixtures", "jwks.json"), jwks)
    token = rs256_token(os.path.join(ROOT, "tests", "fixtures", "rsa_private.pem"))
    nginx = Nginx(workdir, NGINX_PORT, gzip_static) if have_nginx else None
    bench = Bench(args, binary, gen, workdir, jwks, token, nginx)
    try:
        try:
            for n in [int(s) for s in args.sizes.split(",") if s]:
                data, import_s = dataset(gen, binary, workdir, n)
                extra = ("--workos-webhook-secret", WEBHOOK_SECRET) if n in args.first_read_sizes else ()
                server = Rollcall(binary, data, jwks, RC_PORT, extra)
                bench.compare(n, server, import_s)
                server.stop()
                os.remove(data)
            if args.million:
                million(bench)
        finally:
            if bench.plain_rows:
                print_table(bench.plain_rows)
            if bench.gzip_rows:
                print_gzip_table(bench.gzip_rows)
            print_first_reads(bench.first_reads)
            sys.stdout.flush()
        if args.metrics:
            metrics_cost(binary, gen, workdir, jwks, token, args.duration, args.rounds)
        if args.webhooks:
            webhooks(binary, webhook_load, workdir, jwks, args.webhook_events)
    finally:
        if nginx:
            nginx.stop()
        for proc in STARTED:
            if proc.poll() is None:
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


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


def million(bench):
    """1,000,000 users: start, idle RSS, one full read with curl on the fresh
    server (first byte, total, peak RSS), a 100-user page; then the same wrk
    comparisons as the other sizes (plain and gzip, 8 connections)."""
    n = 1_000_000
    data, import_s = dataset(bench.gen, bench.binary, bench.workdir, n)
    extra = ("--workos-webhook-secret", WEBHOOK_SECRET) if n in bench.args.first_read_sizes else ()
    server = Rollcall(bench.binary, data, bench.jwks, RC_PORT, extra)
    token = bench.token
    time.sleep(0.3)
    idle_mb = server.rss_kb() / 1024
    out = sh("curl", "-s", "-o", "/dev/null", "-w", "%{time_starttransfer} %{time_total} %{size_download}",
             "-H", f"Authorization: Bearer {token}", f"http://127.0.0.1:{RC_PORT}{PATH}").stdout.split()
    ttfb, total, size = float(out[0]), float(out[1]), int(out[2])
    peak_mb = server.peak_kb() / 1024
    first = sh("curl", "-s", "-o", "/dev/null", "-w", "%{time_total}", "-H", f"Authorization: Bearer {token}",
               f"http://127.0.0.1:{RC_PORT}{PATH}?limit=100").stdout
    print(f"\n1,000,000 users: import {n / import_s:,.0f} users/s ({import_s:.1f} s); "
          f"start {server.start_ms:.0f} ms; idle RSS {idle_mb:.0f} MB; full list {size / 1e6:.0f} MB "
          f"first byte {ttfb * 1000:.1f} ms, all in {total:.2f} s, peak RSS {peak_mb:.0f} MB; "
          f"a 100-user page {float(first) * 1000:.1f} ms", flush=True)
    bench.compare(n, server, import_s)
    server.stop()
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
