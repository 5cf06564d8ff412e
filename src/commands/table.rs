//! Key positions of every Redis command that carries keys, generated from the key specs
//! of Redis 7.0.15's `COMMAND INFO` by `tests/tools/gen_command_table.py` (facts, not code).
//! Subcommands are named `container|sub`, as Redis names them.

use super::keys::{Begin, Find, KeySpec};

#[rustfmt::skip]
pub static KEY_SPECS: &[(&str, &[KeySpec])] = &[
    ("append", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("bitcount", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("bitfield", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("bitfield_ro", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("bitop", &[
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Index(3), find: Find::Range { last: -1, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("bitpos", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("blmove", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("blmpop", &[
        KeySpec { begin: Begin::Index(2), find: Find::Keynum { idx: 0, first: 1, step: 1 }, incomplete: false },
    ]),
    ("blpop", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: -2, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("brpop", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: -2, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("brpoplpush", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("bzmpop", &[
        KeySpec { begin: Begin::Index(2), find: Find::Keynum { idx: 0, first: 1, step: 1 }, incomplete: false },
    ]),
    ("bzpopmax", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: -2, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("bzpopmin", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: -2, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("copy", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("decr", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("decrby", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("del", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: -1, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("dump", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("eval", &[
        KeySpec { begin: Begin::Index(2), find: Find::Keynum { idx: 0, first: 1, step: 1 }, incomplete: false },
    ]),
    ("eval_ro", &[
        KeySpec { begin: Begin::Index(2), find: Find::Keynum { idx: 0, first: 1, step: 1 }, incomplete: false },
    ]),
    ("evalsha", &[
        KeySpec { begin: Begin::Index(2), find: Find::Keynum { idx: 0, first: 1, step: 1 }, incomplete: false },
    ]),
    ("evalsha_ro", &[
        KeySpec { begin: Begin::Index(2), find: Find::Keynum { idx: 0, first: 1, step: 1 }, incomplete: false },
    ]),
    ("exists", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: -1, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("expire", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("expireat", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("expiretime", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("fcall", &[
        KeySpec { begin: Begin::Index(2), find: Find::Keynum { idx: 0, first: 1, step: 1 }, incomplete: false },
    ]),
    ("fcall_ro", &[
        KeySpec { begin: Begin::Index(2), find: Find::Keynum { idx: 0, first: 1, step: 1 }, incomplete: false },
    ]),
    ("geoadd", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("geodist", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("geohash", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("geopos", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("georadius", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Keyword("STORE", 6), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Keyword("STOREDIST", 6), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("georadius_ro", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("georadiusbymember", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Keyword("STORE", 5), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Keyword("STOREDIST", 5), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("georadiusbymember_ro", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("geosearch", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("geosearchstore", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("get", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("getbit", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("getdel", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("getex", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("getrange", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("getset", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("hdel", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("hexists", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("hget", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("hgetall", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("hincrby", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("hincrbyfloat", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("hkeys", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("hlen", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("hmget", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("hmset", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("hrandfield", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("hscan", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("hset", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("hsetnx", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("hstrlen", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("hvals", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("incr", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("incrby", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("incrbyfloat", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("lcs", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 1, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("lindex", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("linsert", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("llen", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("lmove", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("lmpop", &[
        KeySpec { begin: Begin::Index(1), find: Find::Keynum { idx: 0, first: 1, step: 1 }, incomplete: false },
    ]),
    ("lpop", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("lpos", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("lpush", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("lpushx", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("lrange", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("lrem", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("lset", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("ltrim", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("memory|usage", &[
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("mget", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: -1, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("migrate", &[
        KeySpec { begin: Begin::Index(3), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Keyword("KEYS", -2), find: Find::Range { last: -1, step: 1, limit: 0 }, incomplete: true },
    ]),
    ("move", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("mset", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: -1, step: 2, limit: 0 }, incomplete: false },
    ]),
    ("msetnx", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: -1, step: 2, limit: 0 }, incomplete: false },
    ]),
    ("object|encoding", &[
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("object|freq", &[
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("object|idletime", &[
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("object|refcount", &[
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("persist", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("pexpire", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("pexpireat", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("pexpiretime", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("pfadd", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("pfcount", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: -1, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("pfdebug", &[
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("pfmerge", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: -1, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("psetex", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("pttl", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("rename", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("renamenx", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("restore", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("restore-asking", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("rpop", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("rpoplpush", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("rpush", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("rpushx", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("sadd", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("scard", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("sdiff", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: -1, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("sdiffstore", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: -1, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("set", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("setbit", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("setex", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("setnx", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("setrange", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("sinter", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: -1, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("sintercard", &[
        KeySpec { begin: Begin::Index(1), find: Find::Keynum { idx: 0, first: 1, step: 1 }, incomplete: false },
    ]),
    ("sinterstore", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: -1, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("sismember", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("smembers", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("smismember", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("smove", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("sort", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Unknown, find: Find::Unknown, incomplete: false },
        KeySpec { begin: Begin::Unknown, find: Find::Unknown, incomplete: false },
    ]),
    ("sort_ro", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Unknown, find: Find::Unknown, incomplete: false },
    ]),
    ("spop", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("spublish", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("srandmember", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("srem", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("sscan", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("ssubscribe", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: -1, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("strlen", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("substr", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("sunion", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: -1, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("sunionstore", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: -1, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("sunsubscribe", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: -1, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("touch", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: -1, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("ttl", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("type", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("unlink", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: -1, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("watch", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: -1, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("xack", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("xadd", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("xautoclaim", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("xclaim", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("xdel", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("xgroup|create", &[
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("xgroup|createconsumer", &[
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("xgroup|delconsumer", &[
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("xgroup|destroy", &[
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("xgroup|setid", &[
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("xinfo|consumers", &[
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("xinfo|groups", &[
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("xinfo|stream", &[
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("xlen", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("xpending", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("xrange", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("xread", &[
        KeySpec { begin: Begin::Keyword("STREAMS", 1), find: Find::Range { last: -1, step: 1, limit: 2 }, incomplete: false },
    ]),
    ("xreadgroup", &[
        KeySpec { begin: Begin::Keyword("STREAMS", 4), find: Find::Range { last: -1, step: 1, limit: 2 }, incomplete: false },
    ]),
    ("xrevrange", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("xsetid", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("xtrim", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zadd", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zcard", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zcount", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zdiff", &[
        KeySpec { begin: Begin::Index(1), find: Find::Keynum { idx: 0, first: 1, step: 1 }, incomplete: false },
    ]),
    ("zdiffstore", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Index(2), find: Find::Keynum { idx: 0, first: 1, step: 1 }, incomplete: false },
    ]),
    ("zincrby", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zinter", &[
        KeySpec { begin: Begin::Index(1), find: Find::Keynum { idx: 0, first: 1, step: 1 }, incomplete: false },
    ]),
    ("zintercard", &[
        KeySpec { begin: Begin::Index(1), find: Find::Keynum { idx: 0, first: 1, step: 1 }, incomplete: false },
    ]),
    ("zinterstore", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Index(2), find: Find::Keynum { idx: 0, first: 1, step: 1 }, incomplete: false },
    ]),
    ("zlexcount", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zmpop", &[
        KeySpec { begin: Begin::Index(1), find: Find::Keynum { idx: 0, first: 1, step: 1 }, incomplete: false },
    ]),
    ("zmscore", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zpopmax", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zpopmin", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zrandmember", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zrange", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zrangebylex", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zrangebyscore", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zrangestore", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Index(2), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zrank", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zrem", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zremrangebylex", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zremrangebyrank", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zremrangebyscore", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zrevrange", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zrevrangebylex", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zrevrangebyscore", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zrevrank", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zscan", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zscore", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
    ]),
    ("zunion", &[
        KeySpec { begin: Begin::Index(1), find: Find::Keynum { idx: 0, first: 1, step: 1 }, incomplete: false },
    ]),
    ("zunionstore", &[
        KeySpec { begin: Begin::Index(1), find: Find::Range { last: 0, step: 1, limit: 0 }, incomplete: false },
        KeySpec { begin: Begin::Index(2), find: Find::Keynum { idx: 0, first: 1, step: 1 }, incomplete: false },
    ]),
];
