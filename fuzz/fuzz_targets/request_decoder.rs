//! The RESP request decoder on arbitrary client bytes: it never panics, consumes only what it
//! returns, and every request it returns re-parses from its own bytes to the same arguments.
//! The forwarding lane's in-place look (`peek`) sees exactly what the parser takes: the same
//! size, command name and first argument, or nothing.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rekey::protocol::RequestParser;

fuzz_target!(|data: &[u8]| {
    let parser = RequestParser {
        max_bulk: 1 << 20,
        max_array: 1 << 12,
    };
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        let seen = parser.peek(&buf);
        let seen_raw = buf.clone();
        match parser.parse(&mut buf) {
            Ok(Some(req)) => {
                assert!(buf.len() < before, "a request consumed no bytes");
                if let Some(seen) = seen {
                    assert_eq!(seen.len, before - buf.len(), "peek sees the request's size");
                    assert_eq!(seen.name(&seen_raw), req.arg(0).unwrap(), "and its name");
                    assert_eq!(seen.arg1(&seen_raw), req.arg(1), "and its first argument");
                }
                let mut again = BytesMut::from(&req.raw()[..]);
                let re = parser
                    .parse(&mut again)
                    .expect("a request's own bytes parse")
                    .expect("a request's own bytes are complete");
                assert!(again.is_empty(), "a request's bytes hold exactly one request");
                assert!(req.args().eq(re.args()), "arguments survive a round trip");
            }
            Ok(None) => {
                assert!(seen.is_none(), "peek sees no request where the parser needs more");
                assert_eq!(buf.len(), before, "an incomplete request leaves the buffer as is");
                break;
            }
            Err(_) => {
                assert!(seen.is_none(), "peek sees no request where the parser refuses one");
                break; // the client gets -ERR Protocol error and is closed
            }
        }
    }
});
