//! RESP on the wire, apart from what any command means.
//!
//! rekey reads two kinds of traffic: requests from clients (always an array of bulk strings,
//! or an inline command line) and replies from Redis (any RESP2 or RESP3 frame). Both are kept
//! as the original bytes (`Bytes` slices of the read buffer) so that a request or reply nobody
//! needs to change is forwarded without being copied or re-encoded.
//! It knows nothing of what a command means (that is [`crate::commands`]).
//!
//! - [`request`]: one client request (its bytes and argument ranges) and the writers that
//!   build or splice requests.
//! - [`parser`]: incremental, zero-copy request parser with Redis's limits and error texts.
//! - [`scan`]: the line and integer scanning every reader here shares.
//! - [`tree`]: a reply decoded for re-encoding (key names mapped back, cluster merges).
//! - [`reply`]: finds where one reply frame ends, without allocating, so replies can be matched
//!   to requests and passed through untouched; full decoding (redis-protocol) only when needed.
//! - [`encode`]: writes the replies rekey produces itself, in RESP2 or RESP3.

pub mod encode;
pub mod parser;
pub mod reply;
pub mod request;
pub mod scan;
pub mod tree;

pub use parser::{ParseError, RequestParser};
pub use request::Request;
