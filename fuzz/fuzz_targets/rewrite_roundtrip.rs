//! Decode → rewrite → encode, for requests and replies (the first byte picks which).
//!
//! Requests: under rules that match nothing, every request is forwarded byte-identical; under
//! rules that match, a rewritten request re-encodes as exactly one valid request with the same
//! command and argument count, and splicing the changes into the original bytes (as the
//! session does, also through the short path for single-key commands) gives exactly the
//! rebuilt request. Replies: any complete reply frame, mapped back for any reply
//! kind, is still exactly one complete frame; a frame that needs no change is returned as is.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rekey::commands::{lookup, ReplyKeys};
use rekey::config::schema::RuleConfig;
use rekey::protocol::reply::FrameScanner;
use rekey::protocol::RequestParser;
use rekey::rules::rewrite::{
    map_push, map_reply, plan_request, rewrite_into, rewrite_request, Exact, Outcome, ReplyCtx,
    Scope,
};
use rekey::rules::memory::PrefixMemory;
use rekey::rules::RuleSet;
use std::sync::OnceLock;

fn rule(name: &str, pattern: &str, replace: &str, channels: bool) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        pattern: pattern.into(),
        replace: replace.into(),
        apps: None,
        channels,
    }
}

fn matching() -> &'static RuleSet {
    static R: OnceLock<RuleSet> = OnceLock::new();
    R.get_or_init(|| {
        RuleSet::compile(&[
            rule("sessions", r"^(\{?)(AppA|AppB)_", "${1}shared_", false),
            rule("strip", "^x:", "", true),
            rule("namespace", "^", "ns:", false),
        ])
        .unwrap()
    })
}

fn never() -> &'static RuleSet {
    static R: OnceLock<RuleSet> = OnceLock::new();
    R.get_or_init(|| RuleSet::compile(&[rule("never", "^\u{1}never\u{2}", "y", true)]).unwrap())
}

const KINDS: [ReplyKeys; 10] = [
    ReplyKeys::None,
    ReplyKeys::First,
    ReplyKeys::Streams,
    ReplyKeys::List,
    ReplyKeys::Scan,
    ReplyKeys::Single,
    ReplyKeys::Secrets,
    ReplyKeys::Channels,
    ReplyKeys::NumSub,
    ReplyKeys::TrackingInfo,
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        requests(rest);
    } else {
        replies(mode, rest);
    }
});

fn requests(data: &[u8]) {
    let parser = RequestParser::default();
    let mut buf = BytesMut::from(data);
    while let Ok(Some(req)) = parser.parse(&mut buf) {
        if req.is_empty() {
            continue;
        }
        let spec = lookup(&req);
        let mut memory = PrefixMemory::default();
        let mut scope = Scope {
            rules: never(),
            app: None,
            memory: &mut memory,
        };
        let out = rewrite_request(&mut scope, spec, &req);
        assert!(out.request.is_none(), "no rule matches: forwarded as the original bytes");

        let mut memory = PrefixMemory::default();
        let mut scope = Scope {
            rules: matching(),
            app: Some("app"),
            memory: &mut memory,
        };
        let plan = plan_request(&mut scope, spec, &req);
        let mut spliced = BytesMut::new();
        if !plan.is_unchanged() {
            plan.write_to(&req, &mut spliced);
            assert_eq!(plan.encoded_len(&req), spliced.len(), "announced size");
        }
        let rebuilt = plan.into_rewritten(&req).request;
        // The session's path (encoded into its batch, or built) gives the same bytes.
        let mut encoded = BytesMut::new();
        match rewrite_into(&mut scope, spec, &req, Some(&mut encoded), 1 << 30).0 {
            Outcome::Unchanged => assert!(rebuilt.is_none(), "unchanged by both"),
            Outcome::Encoded => assert_eq!(Some(&encoded[..]), rebuilt.as_ref().map(|r| &r.raw()[..])),
            Outcome::Rebuilt(_) => panic!("a buffer was given"),
        }
        if let Some(new) = rebuilt {
            assert_eq!(&spliced[..], &new.raw()[..], "splice and rebuild agree");
            let mut bytes = BytesMut::from(&new.raw()[..]);
            let re = parser
                .parse(&mut bytes)
                .expect("a rewritten request is valid RESP")
                .expect("and complete");
            assert!(bytes.is_empty(), "exactly one request");
            assert_eq!(re.len(), req.len(), "same argument count");
            assert_eq!(re.arg(0), req.arg(0), "same command");
        }
    }
}

fn replies(mode: u8, data: &[u8]) {
    let mut scanner = FrameScanner::default();
    let Ok(Some(n)) = scanner.scan(data) else {
        return;
    };
    let frame = Bytes::copy_from_slice(&data[..n]);
    let mut memory = PrefixMemory::default();
    memory.remember(0, b"shared_", b"AppA_");
    memory.remember(2, b"ns:", b"");
    let scope = Scope {
        rules: matching(),
        app: Some("app"),
        memory: &mut memory,
    };
    let ctx = ReplyCtx {
        kind: Some(KINDS[(mode as usize / 2) % KINDS.len()]),
        exact: vec![Exact {
            upstream: b"shared_k".to_vec(),
            client: b"AppB_k".to_vec(),
            rule: 0,
        }],
        pattern: (mode & 1 == 1).then(|| b"AppB_*".to_vec()),
        queued: None,
    };
    // The same context as one queued command of an EXEC whose array is `frame`.
    let exec = ReplyCtx {
        queued: Some(vec![Some(Box::new(ctx.clone()))]),
        ..ReplyCtx::default()
    };
    for out in [
        map_reply(&scope, &ctx, frame.clone()),
        map_reply(&scope, &exec, frame.clone()),
        map_push(&scope, frame.clone()),
    ] {
        let mut check = FrameScanner::default();
        assert_eq!(
            check.scan(&out).expect("mapped reply is valid RESP"),
            Some(out.len()),
            "mapped reply is exactly one complete frame"
        );
    }
}
