//! Connections to the real Redis: a few long-lived, pipelined connections shared by every
//! client, and dedicated ("pinned") connections lent to a client while it holds per-connection
//! state (MULTI, WATCH, a blocking command, subscriptions, client tracking).
//!
//! This module moves bytes and matches replies to requests; it knows nothing of rules or of
//! what a command means. A request is a [`Job`]: the bytes to send and where the reply goes
//! ([`ReplyTo`]). Replies are delivered as [`Delivery`] values into the client's channel.
//!
//! - [`url`]: the upstream address and credentials.
//! - [`conn`]: one connection: handshake, the pipelined write/read loop, reply matching.
//! - [`pool`]: shared pools per (protocol, db), created lazily, with reconnect and backoff;
//!   and the bounded pool of pinned connections.
//! - [`silence`]: how long a shared connection has waited with no reply (a stalled Redis).
//! - [`sentinel`]: asking a Sentinel setup's sentinels where its primary is now.

pub mod conn;
pub mod pool;
pub mod sentinel;
pub mod silence;
pub mod url;
pub mod worker;

pub use conn::{Delivery, Job, ReplyTo, Sink};
pub use pool::{PinnedConn, SharedPool, Upstream, UpstreamSettings};
pub use url::UpstreamUrl;
