#!/usr/bin/env python3
"""Generates data/demo.ndjson, the demo organizations `rollcall serve --dev` loads.

Deterministic (fixed seed, fixed WorkOS ids and timestamps, from which
rollcall derives its ids), so the README's curl examples show the same ids on
every machine. Run from the repository root:
    python3 tools/gen_demo.py > data/demo.ndjson
"""
import json
import random
import sys
from datetime import datetime, timedelta, timezone

rng = random.Random(20261126)
BASE = datetime(2026, 1, 5, 9, 0, 0, tzinfo=timezone.utc)


def ts(offset_minutes):
    t = BASE + timedelta(minutes=offset_minutes)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}Z"


def wid(prefix, n):
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    body = "".join(alphabet[(n * 7 + i * 13 + len(prefix)) % 32] for i in range(20))
    return f"{prefix}01HDEMO{n:06d}{body[:13]}"


FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Linus", "Radia",
         "Ken", "Frances", "John", "Katherine", "Dennis", "Hedy", "Tim", "Sophie", "Niklaus",
         "Joan", "Leslie", "Anita", "Vint", "Shafi", "Whitfield", "Lynn", "Bjarne", "Carol", "Guido"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Torvalds",
        "Perlman", "Thompson", "Allen", "McCarthy", "Johnson", "Ritchie", "Lamarr", "Berners-Lee",
        "Wilson", "Wirth", "Clarke", "Lamport", "Borg", "Cerf", "Goldwasser", "Diffie", "Conway",
        "Stroustrup", "Shaw", "van Rossum"]
TITLES = ["Engineer", "Senior Engineer", "Staff Engineer", "Product Manager", "Designer",
          "Support Specialist", "Sales Lead", "Recruiter", "Accountant", "Director"]
DEPTS = ["Engineering", "Product", "Design", "Support", "Sales", "People", "Finance"]

ORGS = [
    {
        "id": "org_01HDEMOACME0000000000000000",
        "name": "Acme",
        "directories": [
            {"name": "Acme Okta", "type": "okta scim v2.0", "state": "active",
             "domains": ["acme.test"], "users": 180, "groups": ["Engineering", "Product", "Design", "Support", "Admins", "All Staff"]},
            {"name": "Acme Google Workspace", "type": "gsuite directory", "state": "active",
             "domains": ["acme-labs.test", "acme.test"], "users": 60, "groups": ["Labs", "Interns"]},
        ],
    },
    {
        "id": "org_01HDEMOGLOBEX00000000000000",
        "name": "Globex",
        "directories": [
            {"name": "Globex Entra ID", "type": "azure scim v2.0", "state": "active",
             "domains": ["globex.test"], "users": 120, "groups": ["Sales", "Finance", "IT"]},
            {"name": "Globex legacy SCIM", "type": "generic scim v2.0", "state": "invalid_credentials",
             "domains": [], "users": 12, "groups": []},
        ],
    },
]

out = []
minute = 0
user_n = 0
group_n = 0
authkit = []
org_memberships = []

for org_i, org in enumerate(ORGS):
    for dir_i, d in enumerate(org["directories"]):
        minute += 10
        dir_wid = wid("directory_", org_i * 10 + dir_i)
        out.append({
            "object": "directory", "id": dir_wid, "organization_id": org["id"],
            "name": d["name"], "type": d["type"], "state": d["state"],
            "domains": [{"object": "organization_domain", "domain": x} for x in d["domains"]],
            "created_at": ts(minute - 5), "updated_at": ts(minute - 5),
        })
        groups = []
        for name in d["groups"]:
            minute += 1
            group_n += 1
            gw = wid("directory_group_", group_n)
            groups.append(gw)
            g = {
                "object": "directory_group", "id": gw, "directory_id": dir_wid,
                "organization_id": org["id"], "name": name,
                "idp_id": f"{rng.getrandbits(48):012x}" if rng.random() < 0.8 else None,
                "created_at": ts(minute - 1), "updated_at": ts(minute - 1),
                "rollcall": {"mapped_role": "admin" if name == "Admins" else ("member" if name == "All Staff" else None)},
            }
            if rng.random() < 0.7:
                g["raw_attributes"] = {"displayName": name, "externalId": g["idp_id"]}
            out.append(g)
        domain = d["domains"][0] if d["domains"] else "globex-legacy.test"
        members = []
        for i in range(d["users"]):
            minute += 1
            user_n += 1
            first = rng.choice(FIRST)
            last = rng.choice(LAST)
            email = f"{first}.{last}{user_n}@{domain}".lower().replace(" ", "")
            state = "active"
            r = rng.random()
            if r < 0.06:
                state = "suspended"
            elif r < 0.12:
                state = "inactive"
            has_names = rng.random() > 0.05
            uw = wid("directory_user_", user_n)
            u = {
                "object": "directory_user", "id": uw, "directory_id": dir_wid,
                "organization_id": org["id"],
                "idp_id": "" if rng.random() < 0.05 else f"00u{rng.getrandbits(40):010x}",
                "email": email,
                "emails": [{"primary": True, "type": "work", "value": email}],
                "first_name": first if has_names else None,
                "last_name": last if has_names and rng.random() > 0.03 else None,
                "state": state,
                "custom_attributes": {"department": rng.choice(DEPTS)},
                "created_at": ts(minute - 1), "updated_at": ts(minute - 1),
            }
            if rng.random() > 0.08:
                u["raw_attributes"] = {
                    "userName": email,
                    "name": {"givenName": first, "familyName": last},
                    "title": rng.choice(TITLES),
                    "active": state == "active",
                    "emails": [{"value": email, "type": "work", "primary": True}],
                }
            if rng.random() < 0.15:
                authkit.append({"object": "user", "id": wid("user_", user_n), "email": email,
                                "created_at": ts(minute + 30), "updated_at": ts(minute + 30)})
                # Linking needs the AuthKit user to be an active member of
                # the directory's organization.
                org_memberships.append({
                    "object": "organization_membership", "id": wid("om_", user_n),
                    "user_id": authkit[-1]["id"], "organization_id": org["id"],
                    "role": {"slug": "member"}, "status": "active",
                    "created_at": ts(minute + 30), "updated_at": ts(minute + 30)})
            out.append(u)
            for gw in groups:
                if rng.random() < 0.35 or gw == groups[-1] and d["groups"][-1] == "All Staff":
                    members.append((gw, uw))
        for gw, uw in members:
            out.append({"object": "directory_group_membership", "directory_id": dir_wid,
                        "directory_group_id": gw, "directory_user_id": uw,
                        "rollcall": {"added_at": ts(minute)}})

for line in authkit + org_memberships + out:
    sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
