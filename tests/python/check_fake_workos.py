#!/usr/bin/env python3
"""Proves the fake WorkOS API (tests/support/fake_workos.rs, run as the
`fake_workos` example) against the official `workos` Python SDK, so the fake
the sync tests and benchmarks stand on cannot drift from what WorkOS sends.

With the SDK client itself (base_url pointed at the fake):
- every list is walked with the SDK's own auto-pagination and every object
  fetched by id; each parses with the SDK's strict models, the counts match
  what the fake holds, the order is the documented one;
- every object is compared field by field with the raw JSON: the fake sends
  no field the SDK's model does not declare, every value round-trips
  (timestamps in WorkOS's millisecond `Z` form), every enum value is one the
  SDK knows (`linked`, not `active`, for a directory in `GET /directories`);
- every event type parses as its own SDK class, never the unknown variant;
- errors surface as the SDK expects: 404 NotFoundError, 422
  UnprocessableEntityError, 401 AuthenticationError, 429
  RateLimitExceededError with `retry_after`, 503 ServerError, a dropped
  connection as a network error; with retries on, the SDK waits the fake's
  Retry-After and succeeds.

Usage: check_fake_workos.py path/to/fake_workos
"""
import dataclasses
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from enum import Enum

import requests
from workos import (
    AuthenticationError,
    NotFoundError,
    RateLimitExceededError,
    ServerError,
    UnprocessableEntityError,
    WorkOSClient,
    WorkOSError,
)
from workos._errors import APIError
from workos._types import _format_datetime
from workos.events.models.event_schema import EventSchemaUnknown

EVENT_TYPES = [
    "dsync.activated", "dsync.deleted",
    "dsync.user.created", "dsync.user.updated", "dsync.user.deleted",
    "dsync.group.created", "dsync.group.updated", "dsync.group.deleted",
    "dsync.group.user_added", "dsync.group.user_removed",
    "user.created", "user.updated", "user.deleted",
    "organization_membership.created", "organization_membership.updated",
    "organization_membership.deleted",
]
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    checks += 1


class Fake:
    """The example binary: its first stdout line describes it; stdin takes commands."""

    def __init__(self, binary, *args):
        self.proc = subprocess.Popen([binary, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"FAILED: the fake did not start: {self.proc.stderr.read()}")
        self.info = json.loads(line)
        self.base_url = self.info["base_url"]
        self.api_key = self.info["api_key"]

    def command(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def sdk(self, max_retries=0, api_key=None):
        return WorkOSClient(api_key=api_key or self.api_key, client_id="client_fake",
                            base_url=self.base_url, max_retries=max_retries)

    def raw(self, path, **params):
        r = requests.get(f"{self.base_url}/{path}", params=params,
                         headers={"Authorization": f"Bearer {self.api_key}"}, timeout=10)
        check(r.status_code == 200, f"GET {path} {params}: {r.status_code} {r.text}")
        return r.json()

    def raw_all(self, path, **params):
        """Every object of a list, following list_metadata.after."""
        items = []
        while True:
            page = self.raw(path, **params)
            items.extend(page["data"])
            after = page["list_metadata"]["after"]
            if after is None or not page["data"]:
                return items
            params["after"] = after

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        code = self.proc.wait(timeout=20)
        check(code == 0, f"the fake exits cleanly on SIGTERM ({code})")


def same(parsed, raw, path):
    """`parsed` (an SDK model) holds exactly what `raw` (the fake's JSON) says."""
    if dataclasses.is_dataclass(parsed):
        check(isinstance(raw, dict), f"{path}: an object")
        fields = {f.name for f in dataclasses.fields(parsed)}
        extra = set(raw) - fields
        check(not extra, f"{path}: fields {type(parsed).__name__} does not declare: {sorted(extra)}")
        for name in fields:
            value = getattr(parsed, name)
            if name in raw:
                same(value, raw[name], f"{path}.{name}")
            else:
                check(value is None, f"{path}.{name}: absent but parsed as {value!r}")
    elif isinstance(parsed, Enum):
        known = {m.value for m in type(parsed)}
        check(parsed.value in known, f"{path}: {parsed.value!r} is not a {type(parsed).__name__} the SDK knows {sorted(known)}")
        check(parsed.value == raw, f"{path}: {parsed.value!r} != {raw!r}")
    elif isinstance(parsed, datetime):
        check(_format_datetime(parsed) == raw, f"{path}: {raw!r} does not round-trip (ms, Z)")
    elif isinstance(parsed, list):
        check(isinstance(raw, list) and len(raw) == len(parsed), f"{path}: list of {len(parsed)}")
        for i, (p, r) in enumerate(zip(parsed, raw)):
            same(p, r, f"{path}[{i}]")
    else:
        check(parsed == raw, f"{path}: {parsed!r} != {raw!r}")


def walk(page):
    return list(page.auto_paging_iter())


def requests_to(fake, route):
    return fake.command("stats")["requests"].get(route, 0)


def check_everything(fake):
    sdk = fake.sdk()
    dirs = fake.info["directories"]

    # Directories: newest first by default, two per page.
    before = requests_to(fake, "/directories")
    listed = walk(sdk.directory_sync.list_directories(limit=2))
    pages = requests_to(fake, "/directories") - before
    check(sorted(d.id for d in listed) == sorted(dirs), "every directory listed once")
    check([d.id for d in listed] == sorted(dirs, reverse=True), "directories default to newest first")
    check(pages == (len(dirs) + 1) // 2, f"the SDK stopped at list_metadata.after = null ({pages} pages)")
    raw = fake.raw_all("directories", limit=2)
    for d, r in zip(listed, raw):
        same(d, r, f"directory {d.id}")
        same(sdk.directory_sync.get_directory(d.id), r, f"get_directory {d.id}")
        check(d.state.value == dirs[d.id]["state"], f"{d.id}: state {d.state.value}")
    states = {d.state.value for d in listed}
    check({"linked", "unlinked", "deleting"} <= states, f"active, inactive and deleting directories: {states}")
    check(any(d.domain is None for d in listed), "a directory without a domain")
    org = next(iter(dirs.values()))["organization_id"]
    of_org = walk(sdk.directory_sync.list_directories(organization_id=org, order="asc"))
    check([d.id for d in of_org] == sorted(i for i, d in dirs.items() if d["organization_id"] == org),
          "organization_id filter, oldest first with order=asc")

    # Directory users and groups, per directory and per group.
    seen_states = set()
    null_email = False
    for dir_id, expected in dirs.items():
        users = walk(sdk.directory_sync.list_users(directory=dir_id, limit=100, order="asc"))
        check(len(users) == expected["users"], f"{dir_id}: {len(users)} users, expected {expected['users']}")
        check([u.id for u in users] == sorted(u.id for u in users), f"{dir_id}: users oldest first")
        raw_users = fake.raw_all("directory_users", directory=dir_id, limit=100, order="asc")
        for u, r in zip(users, raw_users):
            same(u, r, f"directory user {u.id}")
            seen_states.add(u.state.value)
            null_email |= u.email is None
        for u, r in list(zip(users, raw_users))[:25]:
            same(sdk.directory_sync.get_user(u.id), r, f"get_user {u.id}")

        groups = walk(sdk.directory_sync.list_groups(directory=dir_id, order="asc"))
        check(sorted(g.id for g in groups) == sorted(expected["groups"]), f"{dir_id}: every group")
        raw_groups = fake.raw_all("directory_groups", directory=dir_id, order="asc")
        for g, r in zip(groups, raw_groups):
            same(g, r, f"directory group {g.id}")
            same(sdk.directory_sync.get_group(g.id), r, f"get_group {g.id}")
            members = walk(sdk.directory_sync.list_users(group=g.id, limit=100))
            check(len(members) == expected["groups"][g.id], f"{g.id}: {len(members)} members")
            check({m.directory_id for m in members} <= {dir_id}, f"{g.id}: members of its directory")
        if users:
            u = users[0]
            of_user = walk(sdk.directory_sync.list_groups(user=u.id))
            check(all(g.directory_id == dir_id for g in of_user), f"groups of {u.id}")
    check({"active", "inactive", "suspended"} <= seen_states, f"every user state: {seen_states}")
    check(null_email, "a user whose email is null parses")

    # AuthKit users and organization memberships.
    authkit = walk(sdk.user_management.list_users(limit=100))
    check(sorted(u.id for u in authkit) == sorted(fake.info["authkit_users"]), "every AuthKit user")
    for u, r in zip(authkit, fake.raw_all("user_management/users", limit=100)):
        same(u, r, f"AuthKit user {u.id}")
        same(sdk.user_management.get_user(u.id), r, f"get AuthKit user {u.id}")
    memberships = fake.info["memberships"]
    for org in {m["organization_id"] for m in memberships}:
        everyone = walk(sdk.organization_membership.list_organization_memberships(
            organization_id=org, statuses=["active", "pending", "inactive"], limit=3))
        mine = [m for m in memberships if m["organization_id"] == org]
        check(sorted(m.id for m in everyone) == sorted(m["id"] for m in mine), f"{org}: every membership")
        raw = fake.raw_all("user_management/organization_memberships", organization_id=org,
                           statuses="active,pending,inactive", limit=3)
        for m, r in zip(everyone, raw):
            same(m, r, f"membership {m.id}")
            same(sdk.organization_membership.get_organization_membership(m.id), r, f"get membership {m.id}")
        active = walk(sdk.organization_membership.list_organization_memberships(organization_id=org))
        check(sorted(m.id for m in active) == sorted(m["id"] for m in mine if m["status"] == "active"),
              f"{org}: active memberships only by default")
        members = walk(sdk.user_management.list_users(organization_id=org, limit=100))
        check(sorted(u.id for u in members) == sorted({m["user_id"] for m in mine}), f"{org}: users of the organization")

    # Events: every type, oldest first, each its own SDK class.
    expected = fake.info["events"]
    check(set(expected) == set(EVENT_TYPES), f"the scenario emitted every event type: {sorted(expected)}")
    before = requests_to(fake, "/events")
    events = walk(sdk.events.list_events(events=EVENT_TYPES, limit=7))
    pages = requests_to(fake, "/events") - before
    total = sum(expected.values())
    check(len(events) == total, f"{len(events)} events, expected {total}")
    check(pages == -(-total // 7) + 1, f"events: the SDK stops on the empty page after the last ({pages} pages for {total})")
    check([e.id for e in events] == sorted(e.id for e in events), "events oldest first")
    by_type = {}
    for e, r in zip(events, fake.raw_all("events", events=",".join(EVENT_TYPES), limit=7)):
        check(not isinstance(e, EventSchemaUnknown), f"{r['event']} parses as its own class")
        same(e, r, f"event {r['event']} {e.id}")
        by_type[r["event"]] = by_type.get(r["event"], 0) + 1
    check(by_type == expected, f"events by type: {by_type} != {expected}")
    middle = events[len(events) // 2]
    later = walk(sdk.events.list_events(events=EVENT_TYPES, range_start=middle.created_at, limit=100))
    check(middle.id in {e.id for e in later} and all(e.created_at >= middle.created_at for e in later),
          "range_start (a datetime, sent as ISO 8601 with Z) selects the later events")
    after = walk(sdk.events.list_events(events=EVENT_TYPES, after=middle.id, limit=100))
    check([e.id for e in after] == [e.id for e in events if e.id > middle.id], "after an event id")
    only = walk(sdk.events.list_events(events=["dsync.user.created"], limit=100))
    check(len(only) == expected["dsync.user.created"], "events filter")


def check_errors(fake):
    sdk = fake.sdk()
    dir_id = next(iter(fake.info["directories"]))
    try:
        sdk.directory_sync.get_directory("directory_01NOTTHERE")
        check(False, "404 raises")
    except NotFoundError as e:
        check(e.status_code == 404 and e.code == "entity_not_found", f"NotFoundError: {e}")
    try:
        sdk.directory_sync.list_users(directory=dir_id, limit=101)
        check(False, "limit 101 raises")
    except UnprocessableEntityError as e:
        check(e.code == "invalid_request_parameters" and e.errors[0]["field"] == "limit", f"422: {e}")
    try:
        sdk.events.list_events(events=EVENT_TYPES, range_start="2026-01-01T00:00:00+00:00")
        check(False, "an offset timestamp raises")
    except UnprocessableEntityError as e:
        check(e.errors[0]["field"] == "range_start", f"422 range_start: {e}")
    try:
        fake.sdk(api_key="sk_test_wrong").directory_sync.list_directories()
        check(False, "a wrong key raises")
    except AuthenticationError as e:
        check(e.status_code == 401, f"AuthenticationError: {e}")

    # The per-directory limit: 4 requests a second, then 429 + Retry-After.
    limited = None
    for _ in range(8):
        try:
            sdk.directory_sync.list_users(directory=dir_id)
        except RateLimitExceededError as e:
            limited = e
            break
    check(limited is not None, "a burst on one directory is rate limited")
    check(limited.retry_after == 1.0 and limited.code == "rate_limit_exceeded",
          f"RateLimitExceededError carries retry_after: {limited.retry_after} {limited.code}")
    # With retries, the SDK sleeps Retry-After (1 s) and gets through.
    throttled = fake.command("stats")["throttled"]
    started = time.monotonic()
    users = fake.sdk(max_retries=3).directory_sync.list_users(directory=dir_id)
    waited = time.monotonic() - started
    check(len(users.data) == 10, "the retried request succeeds")
    check(fake.command("stats")["throttled"] == throttled + 1, "refused once, then answered")
    check(waited >= 0.95, f"the SDK waited Retry-After before retrying ({waited:.2f} s)")

    # Injected faults.
    check(fake.command("fail /directories 1 503") == {"ok": True}, "fault accepted")
    try:
        sdk.directory_sync.list_directories()
        check(False, "503 raises")
    except ServerError as e:
        check(e.status_code == 503, f"ServerError: {e}")
    fake.command("fail /directories 1 502")
    check(len(fake.sdk(max_retries=1).directory_sync.list_directories().data) == 1, "the SDK retries a 502")
    fake.command("drop /directories 1")
    try:
        sdk.directory_sync.list_directories()
        check(False, "a dropped connection raises")
    except WorkOSError as e:
        check(not isinstance(e, APIError), f"a dropped connection is a network error, not an HTTP one: {e!r}")
    fake.command("drop /directories 1")
    check(len(fake.sdk(max_retries=1).directory_sync.list_directories().data) == 1, "the SDK retries a dropped connection")


def main():
    binary = sys.argv[1]
    with Fake(binary, "--scenario", "--seed-directories", "3", "--seed-users", "750", "--seed-groups", "3",
              "--groups-per-user", "2", "--seed-authkit", "4") as fake:
        check_everything(fake)
    with Fake(binary, "--seed-directories", "1", "--seed-users", "30", "--rate-limits") as fake:
        check_errors(fake)
    print(f"fake WorkOS API vs the workos SDK: {checks} checks passed")


if __name__ == "__main__":
    main()
