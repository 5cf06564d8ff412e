//! rekey: a Redis-protocol proxy that rewrites key prefixes by rules, so that apps whose
//! session providers prefix keys differently can share one namespace (or be isolated), with
//! no change to the apps. See `README.md` and `DESIGN.md`.

pub mod admin;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod protocol;
pub mod proxy;
pub mod rules;
pub mod sentinel;
pub mod stats;
pub mod upstream;
pub mod wire;
