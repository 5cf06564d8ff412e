//! rekey's integration tests, in one test binary (one link of the whole crate instead of one
//! per file). Each module drives real processes: a real `redis-server` on a free loopback port
//! (killed when the test ends) behind a real `rekey` binary, through real clients (`redis-rs`,
//! `redis-cli`, raw RESP bytes, Python's Flask, Prometheus). `common` is the harness.
//!
//! Run one module with `cargo test --test it <module>::`, e.g. `cargo test --test it pinned::`.

mod acl;
mod busy;
mod cloud_auth;
mod cluster;
mod common;
mod compat;
mod credentials;
mod deploy;
mod differential;
mod docs;
mod e2e_flask_session;
mod equivalence;
mod faults;
mod fidelity;
mod layers;
mod metrics;
mod migrate;
mod pinned;
mod presets;
mod prometheus;
mod proxy;
mod reload;
mod robustness;
mod rules;
mod sentinel;
mod share;
mod soak;
mod tls;
