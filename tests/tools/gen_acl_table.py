#!/usr/bin/env python3
"""Regenerates src/commands/acl_table.rs from a live Redis's COMMAND INFO and ACL CAT.

Usage: python3 tests/tools/gen_acl_table.py [port] > src/commands/acl_table.rs
The test `acl_table_matches_live_redis` fails whenever the table and the Redis it runs
against disagree, so this is rerun when Redis gains commands.
"""
import json
import subprocess
import sys

port = sys.argv[1] if len(sys.argv) > 1 else "6379"


def cli(*args):
    return subprocess.check_output(["redis-cli", "-p", port, *args]).decode()


raw = json.loads(cli("--json", "COMMAND", "INFO"))
categories = cli("ACL", "CAT").split()
version = next(l.split(":")[1].strip() for l in cli("INFO", "server").splitlines()
               if l.startswith("redis_version:"))

READ, WRITE, NOT_KEY = 1, 2, 4


def need(flags):
    """What a key of this spec needs: read (ACCESS) and/or write (INSERT/DELETE/UPDATE)."""
    flags = [f.lower() for f in flags]
    if "not_key" in flags:
        return NOT_KEY
    bits = 0
    if "access" in flags:
        bits |= READ
    if any(f in flags for f in ("insert", "delete", "update")):
        bits |= WRITE
    return bits


rows = []


def visit(entry, parent=None):
    name = entry[0].lower()
    cats = 0
    for c in entry[6]:
        cats |= 1 << categories.index(c.lstrip("@"))
    specs = entry[8] if len(entry) > 8 else []
    subs = (entry[9] if len(entry) > 9 else None) or []
    no_auth = "no_auth" in entry[2]
    movable = "movablekeys" in entry[2]
    rows.append((name, entry[1], cats, [need(s.get("flags", [])) for s in specs], no_auth,
                 movable, bool(subs)))
    for sub in subs:
        visit(sub, name)


for entry in raw:
    visit(entry)
rows.sort()

print("//! What Redis's ACLs need to know of every command and subcommand: its arity, its ACL")
print(f"//! categories and what each key spec's keys are used for (read, write), generated from")
print(f"//! Redis {version}'s `COMMAND INFO` and `ACL CAT` by `tests/tools/gen_acl_table.py`")
print("//! (facts, not code). Subcommands are named `container|sub`, as Redis names them.")
print()
print("/// The ACL categories, in Redis's order (`ACL CAT`): bit `i` of")
print("/// [`AclCommand::categories`] is `CATEGORIES[i]`.")
print("pub static CATEGORIES: &[&str] = &[")
for c in categories:
    print(f"    {json.dumps(c)},")
print("];")
print()
print("/// A key spec's keys are read (`ACCESS`).")
print(f"pub const KEY_READ: u8 = {READ};")
print("/// A key spec's keys are written (`INSERT`, `DELETE` or `UPDATE`).")
print(f"pub const KEY_WRITE: u8 = {WRITE};")
print("/// A key spec that names no key (`NOT_KEY`: a shard channel, for routing only).")
print(f"pub const NOT_KEY: u8 = {NOT_KEY};")
print()
print("/// One command or subcommand as ACLs see it.")
print("#[derive(Debug)]")
print("pub struct AclCommand {")
print("    /// `get`, `config|set`.")
print("    pub name: &'static str,")
print("    /// Redis's arity: exact when positive, a minimum (`-n`) when negative.")
print("    pub arity: i16,")
print("    /// Bit set of [`CATEGORIES`].")
print("    pub categories: u32,")
print("    /// Per key spec, in `COMMAND INFO` order: [`KEY_READ`] | [`KEY_WRITE`], or [`NOT_KEY`].")
print("    pub key_needs: &'static [u8],")
print("    /// Runs before authentication (`AUTH`, `HELLO`): never refused by an ACL.")
print("    pub no_auth: bool,")
print("    /// Its keys move (`movablekeys`): Redis finds them with code of its own when the")
print("    /// key specs do not fit the arguments.")
print("    pub movable: bool,")
print("    /// Has subcommands (`config`, `client`): rules name them as `container|sub`.")
print("    pub container: bool,")
print("}")
print()
print("/// Every command and subcommand, sorted by name.")
print("#[rustfmt::skip]")
print("pub static ACL_COMMANDS: &[AclCommand] = &[")
for name, arity, cats, needs, no_auth, movable, container in rows:
    needs_s = ", ".join(str(n) for n in needs)
    print(f"    AclCommand {{ name: {json.dumps(name)}, arity: {arity}, categories: {cats:#x}, "
          f"key_needs: &[{needs_s}], no_auth: {str(no_auth).lower()}, "
          f"movable: {str(movable).lower()}, container: {str(container).lower()} }},")
print("];")
