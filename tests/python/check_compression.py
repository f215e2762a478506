#!/usr/bin/env python3
"""Compressed list answers, checked by real external clients from outside the
process: every coding rollcall sends decodes to exactly the plain bytes.

From scratch in a temp dir: the benchmark dataset (examples/dataset.rs, the
same generator benches/load.py uses) is imported, and rollcall is started
with `--stream-threshold 100`, so the dataset's directory (2,000 users, about
1.7 MB) is served from body files with sendfile(2), while a `?limit=` page of
it is rendered and compressed in memory. For both:

- the plain body (no Accept-Encoding, from urllib and from curl) is the
  reference: no Content-Encoding, `Vary: accept-encoding`, ETag `"<hex>"`;
- the raw gzip and zstd bodies (fetched undecoded) carry their
  Content-Encoding, the coding's magic number and their own ETag
  (`"<hex>-gzip"`, `"<hex>-zstd"`), are smaller than the plain one, are the
  same bytes when asked again, and decode (Python's gzip, backports.zstd /
  compression.zstd) to the plain bytes;
- httpx2 (the HTTP client the workos SDK uses), requests (urllib3) and
  `curl --compressed` each ask for gzip, for zstd and for what they offer by
  default, and each decoded body equals the plain body byte for byte;
- `If-None-Match` with a coding's ETag and that coding accepted is a 304 that
  names it; the gzip ETag without gzip accepted is not a match (200, plain).

Also, from `rollcall_sendfile_bytes` on /metrics: once its files are
written, one request for the large list in each coding moves exactly that
coding's size through sendfile (each coding from its own file), and the page
moves none. And a body under 1 KiB is sent uncompressed.

Usage: check_compression.py path/to/rollcall [path/to/examples/dataset]
(the dataset generator defaults to examples/dataset beside rollcall, and is
built with cargo when missing).
"""
import datetime
import gzip
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import httpx2
import jwt
import requests

try:
    from compression import zstd  # Python 3.14+
except ImportError:
    from backports import zstd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.path.abspath(sys.argv[1])
DATASET_BIN = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else \
    os.path.join(os.path.dirname(BINARY), "examples", "dataset")
USERS = 2000
PAGE = 20
# examples/common/dataset.rs
ORG = "org_01BENCHACME00000000000000"
CODINGS = ("gzip", "zstd")
MAGIC = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd"}
DECODE = {"gzip": gzip.decompress, "zstd": zstd.decompress}
checks = 0


class Mismatch(Exception):
    pass


def check(cond, what):
    global checks
    if not cond:
        raise Mismatch(what)
    checks += 1


def derived_id(workos_id: str, created_at: str) -> str:
    """The id rollcall derives for a WorkOS object (as in benches/load.py)."""
    ms = int(datetime.datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp() * 1000)
    b = bytearray(ms.to_bytes(6, "big") + hashlib.sha256(workos_id.encode()).digest()[:10])
    b[6] = 0x70 | (b[6] & 0x0F)
    b[8] = 0x80 | (b[8] & 0x3F)
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


DIR_UUID = derived_id("directory_01BENCH00000000000001", "2026-01-01T00:00:00.000Z")
PATH = f"/api/directories/{DIR_UUID}/users"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def token():
    with open(os.path.join(ROOT, "tests", "fixtures", "rsa_private.pem"), "rb") as f:
        key = f.read()
    now = int(time.time())
    return jwt.encode({"sub": "user_pycomp", "org_id": ORG, "iat": now, "exp": now + 3600}, key,
                      algorithm="RS256", headers={"kid": "test-rsa-1"})


class Raw:
    """An answer as it came off the wire (urllib decodes nothing)."""

    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def h(self, name):
        return self.headers.get(name)


def raw_get(url, headers):
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return Raw(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        return Raw(e.code, e.headers, e.read())


def vary_has_accept_encoding(value):
    return value is not None and "accept-encoding" in [v.strip().lower() for v in value.split(",")]


def curl(url, auth, workdir, extra):
    """curl's status, headers (lower-cased names) and body (decoded by curl
    itself when `--compressed` is among `extra`)."""
    hdr, out = os.path.join(workdir, "curl.headers"), os.path.join(workdir, "curl.body")
    subprocess.run(["curl", "-sS", "--fail-with-body", "-D", hdr, "-o", out,
                    "-H", f"Authorization: Bearer {auth}", *extra, url], check=True, timeout=60)
    with open(hdr, "rb") as f:
        lines = f.read().decode("latin-1").splitlines()
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    with open(out, "rb") as f:
        body = f.read()
    return status, headers, body


def sendfile_bytes(metrics_port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    m = re.search(r"^rollcall_sendfile_bytes(?:_total)?\s+(\d+)", text, re.M)
    if not m:
        raise Mismatch("/metrics has no rollcall_sendfile_bytes counter")
    return int(m.group(1))


def check_list(name, url, auth, workdir, http2, session):
    """Every check on one list URL; returns a summary line."""
    bearer = {"Authorization": f"Bearer {auth}"}

    # The reference: the plain body, asked for with no Accept-Encoding.
    plain = raw_get(url, bearer)
    check(plain.status == 200, f"{name}: plain GET is 200 (got {plain.status}: {plain.body[:200]!r})")
    check(plain.h("Content-Encoding") is None,
          f"{name}: no Content-Encoding without Accept-Encoding (got {plain.h('Content-Encoding')})")
    check(vary_has_accept_encoding(plain.h("Vary")),
          f"{name}: plain answer has Vary: accept-encoding (got {plain.h('Vary')!r})")
    tag = plain.h("ETag") or ""
    m = re.fullmatch(r'"([0-9a-f]+)"', tag)
    check(m is not None, f'{name}: plain ETag is "<hex>" (got {tag!r})')
    hexpart = m.group(1)
    body = plain.body
    check(len(body) >= 1024 and body.startswith(b"[") and body.endswith(b"]"),
          f"{name}: plain body is a JSON array of 1 KiB or more ({len(body)} bytes)")
    again = raw_get(url, bearer)
    check(again.body == body and again.h("ETag") == tag, f"{name}: plain body is the same bytes when asked again")
    status, headers, curl_plain = curl(url, auth, workdir, [])
    check(status == 200 and "content-encoding" not in headers and curl_plain == body,
          f"{name}: curl without --compressed gets the very same plain bytes")

    # Each coding as sent, undecoded, then decoded here.
    etags = {"identity": tag}
    sizes = {}
    for coding in CODINGS:
        first = raw_get(url, {**bearer, "Accept-Encoding": coding})
        check(first.status == 200, f"{name}/{coding}: 200 (got {first.status})")
        check(first.h("Content-Encoding") == coding,
              f"{name}/{coding}: Content-Encoding: {coding} (got {first.h('Content-Encoding')!r})")
        check(vary_has_accept_encoding(first.h("Vary")),
              f"{name}/{coding}: Vary: accept-encoding (got {first.h('Vary')!r})")
        want_tag = f'"{hexpart}-{coding}"'
        check(first.h("ETag") == want_tag, f"{name}/{coding}: ETag {want_tag} (got {first.h('ETag')!r})")
        etags[coding] = first.h("ETag")
        check(first.body.startswith(MAGIC[coding]), f"{name}/{coding}: the body starts with {coding}'s magic number")
        check(len(first.body) < len(body),
              f"{name}/{coding}: smaller than plain ({len(first.body)} vs {len(body)} bytes)")
        check(DECODE[coding](first.body) == body, f"{name}/{coding}: the raw body decodes to exactly the plain bytes")
        second = raw_get(url, {**bearer, "Accept-Encoding": coding})
        check(second.body == first.body and second.h("ETag") == first.h("ETag"),
              f"{name}/{coding}: the same compressed bytes and ETag when asked again")
        sizes[coding] = len(first.body)
    check(len(set(etags.values())) == 3, f"{name}: the ETags differ per coding ({etags})")

    # Real clients decoding on their own.
    clients = []
    for coding in CODINGS + ("default",):
        hdrs = dict(bearer) if coding == "default" else {**bearer, "Accept-Encoding": coding}
        r = http2.get(url, headers=hdrs)
        got = r.headers.get("content-encoding")
        check(r.status_code == 200 and (coding == "default" or got == coding),
              f"{name}: httpx2 asking {coding}: 200 with Content-Encoding {coding} (got {r.status_code}, {got!r})")
        check(r.content == body, f"{name}: httpx2 ({coding}, Content-Encoding {got}) decodes to the plain bytes")
        if coding == "default":
            clients.append(f"httpx2 {got}")

        r = session.get(url, headers=hdrs, timeout=60)
        got = r.headers.get("Content-Encoding")
        check(r.status_code == 200 and (coding == "default" or got == coding),
              f"{name}: requests asking {coding}: 200 with Content-Encoding {coding} (got {r.status_code}, {got!r})")
        check(r.content == body, f"{name}: requests ({coding}, Content-Encoding {got}) decodes to the plain bytes")
        if coding == "default":
            clients.append(f"requests {got}")

        extra = ["--compressed"] if coding == "default" else ["--compressed", "-H", f"Accept-Encoding: {coding}"]
        status, headers, decoded = curl(url, auth, workdir, extra)
        got = headers.get("content-encoding")
        check(status == 200 and (coding == "default" or got == coding),
              f"{name}: curl --compressed asking {coding}: 200 with Content-Encoding {coding} (got {status}, {got!r})")
        check(vary_has_accept_encoding(headers.get("vary")), f"{name}: curl sees Vary: accept-encoding")
        check(headers.get("etag") == etags.get(got or "identity"),
              f"{name}: curl ({coding}) gets that coding's ETag (got {headers.get('etag')!r})")
        check(decoded == body, f"{name}: curl --compressed ({coding}, Content-Encoding {got}) decodes to the plain bytes")
        if coding == "default":
            clients.append(f"curl --compressed {got}")

    # Conditional requests: a coding's ETag is a match only where that coding
    # is accepted.
    for coding in ("identity",) + CODINGS:
        hdrs = {**bearer, "If-None-Match": etags[coding]}
        if coding != "identity":
            hdrs["Accept-Encoding"] = coding
        r = raw_get(url, hdrs)
        check(r.status == 304 and r.body == b"",
              f"{name}: If-None-Match {etags[coding]} with {coding} accepted is a 304 (got {r.status})")
        check(r.h("ETag") == etags[coding], f"{name}: the 304 names {etags[coding]} (got {r.h('ETag')!r})")
        check(vary_has_accept_encoding(r.h("Vary")), f"{name}: the 304 has Vary: accept-encoding")
    r = http2.get(url, headers={**bearer, "Accept-Encoding": "gzip", "If-None-Match": etags["gzip"]})
    check(r.status_code == 304, f"{name}: httpx2 If-None-Match <gzip etag> + gzip is a 304 (got {r.status_code})")
    status, headers, _ = curl(url, auth, workdir, ["--compressed", "-H", "Accept-Encoding: gzip",
                                                   "-H", f"If-None-Match: {etags['gzip']}"])
    check(status == 304, f"{name}: curl If-None-Match <gzip etag> + gzip is a 304 (got {status})")
    r = raw_get(url, {**bearer, "If-None-Match": etags["gzip"]})
    check(r.status == 200 and r.body == body and r.h("Content-Encoding") is None,
          f"{name}: the gzip ETag without gzip accepted is no match: 200 with the plain body (got {r.status})")

    return body, sizes, (f"{name}: plain {len(body):,} B, gzip {sizes['gzip']:,} B, zstd {sizes['zstd']:,} B; "
            f"ETags {etags['identity']} / -gzip / -zstd; by default: {', '.join(clients)}")


def run(base, metrics_port, workdir):
    auth = token()
    bearer = {"Authorization": f"Bearer {auth}"}
    http2 = httpx2.Client(timeout=60)
    session = requests.Session()
    summary = []
    try:
        before = sendfile_bytes(metrics_port)
        body, sizes, line = check_list(f"file list ({USERS} users, over --stream-threshold)", base + PATH,
                                       auth, workdir, http2, session)
        summary.append(line)
        sent = sendfile_bytes(metrics_port) - before
        check(sent > 0, "the large list went out with sendfile (rollcall_sendfile_bytes grew)")
        # Once its files are written, each coding is sent whole from its own
        # file: one request moves the counter by exactly that coding's size.
        # (The first answers may be streamed while the files are written.)
        moved = {}
        for coding, size in (("identity", len(body)), *sizes.items()):
            for _ in range(50):
                before = sendfile_bytes(metrics_port)
                r = raw_get(base + PATH, {**bearer, "Accept-Encoding": coding})
                moved[coding] = sendfile_bytes(metrics_port) - before
                if moved[coding] == size:
                    break
                time.sleep(0.1)
            check(r.status == 200 and len(r.body) == size and r.h("Content-Length") == str(size),
                  f"file list/{coding}: {size} B with Content-Length (got {r.status}, {len(r.body)} B)")
            check(moved[coding] == size,
                  f"file list/{coding}: sent from its own file with sendfile ({moved[coding]} B moved, want {size})")
        summary.append("  sendfile: " + ", ".join(f"{c} {n:,} B" for c, n in moved.items())
                       + " per request (each coding from its own file)")

        before = sendfile_bytes(metrics_port)
        _, _, line = check_list(f"in-memory page (?limit={PAGE})", f"{base}{PATH}?limit={PAGE}",
                                auth, workdir, http2, session)
        summary.append(line)
        sent = sendfile_bytes(metrics_port) - before
        check(sent == 0, f"the page is answered from memory, not sendfile ({sent} B moved)")

        # Under 1 KiB: sent as it is, whatever is accepted.
        tiny = f"{base}{PATH}?limit=1"
        plain = raw_get(tiny, bearer)
        check(plain.status == 200, f"?limit=1: 200 (got {plain.status})")
        if len(plain.body) < 1024:
            for coding in CODINGS:
                r = raw_get(tiny, {**bearer, "Accept-Encoding": coding})
                check(r.status == 200 and r.h("Content-Encoding") is None and r.body == plain.body,
                      f"?limit=1 ({len(plain.body)} B, under 1 KiB) is not compressed for {coding} "
                      f"(got Content-Encoding {r.h('Content-Encoding')!r})")
            summary.append(f"?limit=1: {len(plain.body)} B, sent uncompressed for gzip and zstd")
        else:
            summary.append(f"?limit=1: {len(plain.body)} B (not under 1 KiB: small-body check skipped)")
    finally:
        http2.close()
        session.close()
    return summary


def main():
    if not os.path.exists(DATASET_BIN):
        subprocess.run(["cargo", "build", "--quiet", "--example", "dataset"], cwd=ROOT, check=True)
    workdir = tempfile.mkdtemp(prefix="rollcall-pycomp-")
    server = None
    log_path = os.path.join(workdir, "rollcall.log")
    try:
        ndjson = os.path.join(workdir, "users.ndjson")
        with open(ndjson, "w") as f:
            subprocess.run([DATASET_BIN, str(USERS)], stdout=f, check=True)
        db = os.path.join(workdir, "rollcall.redb")
        subprocess.run([BINARY, "--data", db, "import", ndjson], check=True, capture_output=True)
        port, metrics_port = free_port(), free_port()
        base = f"http://127.0.0.1:{port}"
        with open(log_path, "w") as log:
            server = subprocess.Popen(
                [BINARY, "serve", "--data", db, "--jwks-file", os.path.join(ROOT, "tests", "fixtures", "jwks.json"),
                 "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics_port}",
                 "--stream-threshold", "100"],
                stdout=subprocess.DEVNULL, stderr=log)
        for _ in range(200):
            if server.poll() is not None:
                raise Mismatch(f"rollcall exited at start (exit {server.returncode})")
            try:
                if urllib.request.urlopen(f"{base}/healthz", timeout=1).status == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        else:
            raise Mismatch("rollcall did not become healthy")
        summary = run(base, metrics_port, workdir)
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
        server = None
        check(code == 0, f"rollcall exits cleanly on SIGTERM (exit {code})")
    except (Mismatch, subprocess.CalledProcessError, OSError, httpx2.HTTPError,
            requests.RequestException) as e:
        if server is not None:
            server.kill()
            server.wait()
        try:
            with open(log_path) as f:
                tail = f.read()[-3000:]
        except OSError:
            tail = ""
        if tail:
            sys.stderr.write(f"--- rollcall log (tail)\n{tail}\n---\n")
        detail = e.stderr.decode(errors="replace") if isinstance(e, subprocess.CalledProcessError) and e.stderr else ""
        raise SystemExit(f"FAILED: {e} {detail}".rstrip())
    finally:
        if server is not None:
            server.kill()
            server.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    for line in summary:
        print(line)
    print(f"compression checks: {checks} passed")


if __name__ == "__main__":
    main()
