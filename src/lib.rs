//! rekey: a Redis-protocol proxy that rewrites key prefixes by rules, so that apps whose
//! session providers prefix keys differently can share one namespace (or be isolated), with
//! no change to the apps. See `README.md`.
//!
//! Layers, each importing only those below it; `server` and `migrate` are peers on top and
//! neither imports the other (`tests/it/layers.rs` keeps it so):
//!
//! ```text
//! server     wires the program: listeners, workers, admin HTTP, reload, Sentinel failover
//! migrate    beside server: `rekey migrate` moves existing keys to the names the rules give
//! proxy      sockets and client sessions: the request path, top to bottom
//! config     load and validate the TOML file (and each identity's ACL and share)
//! acl        Redis 7's ACL language: parsed, checked as Redis checks it, ACL LOG
//! rules      compiled rules and the IO-free rewrite engine (requests and replies)
//! cluster    slot map, routing and fan-out for a Redis Cluster upstream
//! upstream   connections to Redis: pooled, pinned, one "ready" handshake, Sentinel lookup
//! stats      the Prometheus metrics
//! commands   the command table: key positions in and out, pinning class, secrets
//! protocol   RESP: request parser, reply scanner, writer
//! tls        rustls client and server configs, handshakes with a bounded failure reason
//! transport  plain TCP or TLS (rustls driven over the socket), with the same readiness-based I/O
//! wire       buffered, batched socket writes
//! ```
#![forbid(unsafe_code)]

pub mod acl;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod migrate;
pub mod protocol;
pub mod proxy;
pub mod rules;
pub mod server;
pub mod stats;
pub mod tls;
pub mod transport;
pub mod upstream;
pub mod wire;
