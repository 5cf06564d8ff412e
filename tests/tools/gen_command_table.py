#!/usr/bin/env python3
"""Regenerates src/commands/table.rs from a live Redis's COMMAND INFO key specs.

Usage: python3 tests/tools/gen_command_table.py [port] > src/commands/table.rs
The test `command_table_matches_live_redis` fails whenever the table and the Redis it runs
against disagree, so this is rerun when Redis gains commands.
"""
import json
import subprocess
import sys

port = sys.argv[1] if len(sys.argv) > 1 else "6379"
raw = subprocess.check_output(["redis-cli", "-p", port, "--json", "COMMAND", "INFO"])
version = subprocess.check_output(["redis-cli", "-p", port, "INFO", "server"]).decode()
version = next(l.split(":")[1].strip() for l in version.splitlines() if l.startswith("redis_version:"))


def begin(bs):
    t, spec = bs["type"], bs["spec"]
    if t == "index":
        return f"Begin::Index({spec['index']})"
    if t == "keyword":
        return f"Begin::Keyword({json.dumps(spec['keyword'])}, {spec['startfrom']})"
    return "Begin::Unknown"


def find(fk):
    t, spec = fk["type"], fk["spec"]
    if t == "range":
        return f"Find::Range {{ last: {spec['lastkey']}, step: {spec['keystep']}, limit: {spec['limit']} }}"
    if t == "keynum":
        return f"Find::Keynum {{ idx: {spec['keynumidx']}, first: {spec['firstkey']}, step: {spec['keystep']} }}"
    return "Find::Unknown"


rows = []


def visit(entry, parent=None):
    name = entry[0].lower()
    specs = entry[8] if len(entry) > 8 else []
    subs = entry[9] if len(entry) > 9 else []
    if specs:
        parts = []
        for s in specs:
            flags = s.get("flags", [])
            incomplete = "true" if "incomplete" in [f.lower() for f in flags] else "false"
            parts.append(f"KeySpec {{ begin: {begin(s['begin_search'])}, find: {find(s['find_keys'])}, incomplete: {incomplete} }}")
        rows.append((name, parts))
    for sub in subs or []:
        visit(sub, name)


for entry in json.loads(raw):
    visit(entry)
rows.sort()

print("//! Key positions of every Redis command that carries keys, generated from the key specs")
print(f"//! of Redis {version}'s `COMMAND INFO` by `tests/tools/gen_command_table.py` (facts, not code).")
print("//! Subcommands are named `container|sub`, as Redis names them.")
print()
print("use super::keys::{Begin, Find, KeySpec};")
print()
print("#[rustfmt::skip]")
print("pub static KEY_SPECS: &[(&str, &[KeySpec])] = &[")
for name, parts in rows:
    print(f"    ({json.dumps(name)}, &[")
    for p in parts:
        print(f"        {p},")
    print("    ]),")
print("];")
