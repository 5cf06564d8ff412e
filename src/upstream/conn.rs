//! The paths callers used before `upstream` was split: `conn::connect`, `conn::ConnError`,
//! `conn::each_reply`…, re-exported from where they now live ([`dial`](super::dial) and
//! [`contract`](super::contract)). New code imports those files directly.
//!
//! Nothing but re-exports: it must not grow code of its own, nor re-export the driver or a
//! pool.

pub use crate::upstream::contract::{each_reply, each_scattered};
pub use crate::upstream::dial::{
    connect, open, probe, query_once, read_more, ready_commands, roundtrip, write_all, ConnError,
};
