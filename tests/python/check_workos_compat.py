#!/usr/bin/env python3
"""Checks rollcall against real external clients, from outside the process.

- Tokens are minted with PyJWT (RS256 and ES256) against a JWKS written with
  PyJWT's own JWK export, and refused when forged, expired or `alg: none`.
- Webhook bodies are signed here with plain hmac, then checked by the
  official `workos` SDK (`webhooks.verify_event`, which also parses the event
  with WorkOS's own models) before rollcall sees them: what WorkOS would
  accept, rollcall accepts; what it refuses, rollcall refuses with a 401.

Usage: check_workos_compat.py path/to/rollcall
"""
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from workos import WorkOSClient

BINARY = sys.argv[1]
SECRET = "whsec_python_check"
ORG = "org_01PYTHONCHECK"
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    checks += 1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sign(body: bytes, t_ms: int, secret: str = SECRET) -> str:
    mac = hmac.new(secret.encode(), f"{t_ms}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t_ms}, v1={mac}"


def now_ms():
    return int(time.time() * 1000)


def ts(offset):
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(1767225600 + offset))


def event(kind, data, n):
    return {"object": "event", "id": f"event_01PY{n:012d}", "event": kind, "data": data,
            "created_at": ts(n)}


def main():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_jwk = json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key()))
    rsa_jwk.update(kid="py-rsa", alg="RS256", use="sig")
    ec_jwk = json.loads(ECAlgorithm.to_jwk(ec_key.public_key()))
    ec_jwk.update(kid="py-ec", alg="ES256", use="sig")

    workdir = tempfile.mkdtemp(prefix="rollcall-py-")
    jwks_path = os.path.join(workdir, "jwks.json")
    with open(jwks_path, "w") as f:
        json.dump({"keys": [rsa_jwk, ec_jwk]}, f)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [BINARY, "serve", "--listen", f"127.0.0.1:{port}", "--data", os.path.join(workdir, "db.redb"),
         "--jwks-file", jwks_path, "--workos-webhook-secret", SECRET],
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(100):
            try:
                if requests.get(f"{base}/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.05)
        run(base, rsa_key, ec_key)
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=20)
        logs = server.stderr.read().decode()
    check(code == 0, f"rollcall exits cleanly on SIGTERM (exit {code})")
    for secret in (SECRET, "sk_test"):
        check(secret not in logs, "no secret appears in the logs")
    print(f"python compatibility checks: {checks} passed")


def run(base, rsa_key, ec_key):
    exp = int(time.time()) + 600
    rs = jwt.encode({"org_id": ORG, "exp": exp, "sub": "user_py"}, rsa_key, algorithm="RS256",
                    headers={"kid": "py-rsa"})
    es = jwt.encode({"organization_id": ORG, "exp": exp}, ec_key, algorithm="ES256",
                    headers={"kid": "py-ec"})
    for token, what in ((rs, "PyJWT RS256"), (es, "PyJWT ES256")):
        r = requests.get(f"{base}/api/directories", headers={"Authorization": f"Bearer {token}"})
        check(r.status_code == 200 and r.json() == [], f"{what} token accepted: {r.status_code} {r.text}")

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode({"org_id": ORG, "exp": exp}, other, algorithm="RS256", headers={"kid": "py-rsa"})
    expired = jwt.encode({"org_id": ORG, "exp": int(time.time()) - 600}, rsa_key, algorithm="RS256",
                         headers={"kid": "py-rsa"})
    none = jwt.encode({"org_id": ORG, "exp": exp}, None, algorithm="none")
    for token, what in ((forged, "forged"), (expired, "expired"), (none, "alg none")):
        r = requests.get(f"{base}/api/directories", headers={"Authorization": f"Bearer {token}"})
        check(r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED", f"{what} token refused")

    sdk = WorkOSClient(api_key="sk_test", client_id="client_test")
    directory = {"object": "directory", "id": "directory_01PY", "organization_id": ORG, "name": "Py",
                 "type": "okta scim v2.0", "state": "active", "external_key": "k",
                 "domains": [{"object": "organization_domain", "id": "org_domain_1", "domain": "py.test"}],
                 "created_at": ts(0), "updated_at": ts(0)}
    user = {"object": "directory_user", "id": "directory_user_01PY", "directory_id": "directory_01PY",
            "organization_id": ORG, "idp_id": "00upy", "email": "py@py.test",
            "emails": [{"primary": True, "type": "work", "value": "py@py.test"}],
            "first_name": "Monty", "last_name": None, "state": "active",
            "raw_attributes": {"title": "Snake"}, "custom_attributes": {},
            "created_at": ts(1), "updated_at": ts(1)}
    authkit = {"object": "user", "id": "user_01PY", "email": "PY@py.test", "email_verified": True,
               "first_name": "Monty", "last_name": None, "profile_picture_url": None,
               "last_sign_in_at": None, "external_id": None, "metadata": {},
               "created_at": ts(2), "updated_at": ts(2)}
    membership = {"object": "organization_membership", "id": "om_01PY", "user_id": "user_01PY",
                  "organization_id": ORG, "organization_name": "Py", "role": {"slug": "member"},
                  "status": "active", "custom_attributes": {}, "directory_managed": False,
                  "created_at": ts(3), "updated_at": ts(3)}
    stream = (("dsync.activated", directory), ("dsync.user.created", user), ("user.created", authkit),
              ("organization_membership.created", membership))
    for n, (kind, data) in enumerate(stream, start=1):
        body = json.dumps(event(kind, data, n)).encode()
        header = sign(body, now_ms())
        parsed = sdk.webhooks.verify_event(event_body=body, event_signature=header, secret=SECRET)
        check(parsed is not None, f"the workos SDK accepts the {kind} event and its signature")
        r = requests.post(f"{base}/webhooks/workos", data=body,
                          headers={"WorkOS-Signature": header, "Content-Type": "application/json"})
        check(r.status_code == 200 and r.json()["outcome"] == "applied", f"rollcall accepts {kind}: {r.text}")

    body = json.dumps(event("dsync.user.deleted", user, 9)).encode()
    bad = [
        (body + b" ", sign(body, now_ms()), "tampered body"),
        (body, sign(body, now_ms(), "wrong-secret"), "wrong secret"),
        (body, sign(body, now_ms() - 181_000), "stale timestamp"),
    ]
    for payload, header, what in bad:
        try:
            sdk.webhooks.verify_header(event_body=payload, event_signature=header, secret=SECRET)
            sdk_ok = True
        except ValueError:
            sdk_ok = False
        check(not sdk_ok, f"the workos SDK refuses: {what}")
        r = requests.post(f"{base}/webhooks/workos", data=payload, headers={"WorkOS-Signature": header})
        check(r.status_code == 401, f"rollcall refuses: {what} ({r.status_code})")

    auth = {"Authorization": f"Bearer {rs}"}
    dirs = requests.get(f"{base}/api/directories", headers=auth).json()
    check(len(dirs) == 1 and dirs[0]["type"] == "okta_scim" and dirs[0]["domain"] == "py.test", f"directory: {dirs}")
    users = requests.get(f"{base}/api/directories/{dirs[0]['id']}/users", headers=auth).json()
    check(len(users) == 1, "the user survived every refused deletion")
    u = users[0]
    check(u["email"] == "py@py.test" and u["last_name"] is None and json.loads(u["raw_attributes"]) == {"title": "Snake"},
          f"user: {u}")
    check(u["user_id"] == "user_01PY", f"linked to the AuthKit user, an active member of the organization: {u}")


if __name__ == "__main__":
    main()
