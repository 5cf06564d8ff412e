//! Criterion benches for the functions every request and reply goes through: decoding a
//! pipelined buffer of requests, finding reply frame ends, applying rules (no rule matches / a rule matches), encoding
//! replies, and mapping a SCAN reply back. Run with `cargo bench --bench hot_path`.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rekey::commands::lookup;
use rekey::config::schema::RuleConfig;
use rekey::protocol::encode::{Encoder, Proto};
use rekey::protocol::reply::FrameScanner;
use rekey::protocol::{Request, RequestParser};
use rekey::rules::memory::PrefixMemory;
use rekey::rules::rewrite::{map_reply, rewrite_into, rewrite_request, Outcome, Scope};
use rekey::rules::RuleSet;
use std::hint::black_box;

fn rules() -> RuleSet {
    RuleSet::compile(&[RuleConfig {
        name: "sessions".into(),
        pattern: r"^(\{?)(AppA|AppB)_".into(),
        replace: "${1}shared_".into(),
        apps: None,
        channels: false,
    }])
    .unwrap()
}

fn decode(c: &mut Criterion) {
    let mut buf = Vec::new();
    for i in 0..100 {
        buf.extend_from_slice(Request::from_args(["GET".to_string(), format!("key:{i}")]).raw());
    }
    let parser = RequestParser::default();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(100));
    g.bench_function("pipeline_of_100_gets", |b| {
        b.iter(|| {
            let mut bytes = BytesMut::from(&buf[..]);
            let mut n = 0;
            while let Some(req) = parser.parse(&mut bytes).unwrap() {
                n += req.len();
            }
            black_box(n)
        })
    });
    // What the forwarding lane does instead: look at each request in place.
    g.bench_function("peek_pipeline_of_100_gets", |b| {
        b.iter(|| {
            let (mut at, mut n) = (0, 0);
            while let Some(seen) = parser.peek(&buf[at..]) {
                n += seen.name(&buf[at..]).len();
                at += seen.len;
            }
            black_box(n)
        })
    });
    // What the upstream connection does with Redis's replies: find where each frame ends
    // (GET replies of 64 bytes, and misses).
    let mut replies = Vec::new();
    for i in 0..100 {
        match i % 4 {
            0 => replies.extend_from_slice(b"$-1\r\n"),
            _ => replies.extend_from_slice(format!("$64\r\n{}\r\n", "v".repeat(64)).as_bytes()),
        }
    }
    g.bench_function("frames_of_100_get_replies", |b| {
        b.iter(|| {
            let mut scanner = FrameScanner::default();
            let mut at = 0;
            while let Some(n) = scanner.scan(&replies[at..]).unwrap() {
                at += n;
            }
            black_box(at)
        })
    });
    g.finish();
}

/// The rules step as the session runs it: a changed request is encoded into a reused buffer
/// (the batch on its way upstream).
fn rewrite(c: &mut Criterion) {
    let rules = rules();
    let fixed = RuleSet::compile(&[RuleConfig {
        name: "ns".into(),
        pattern: "^".into(),
        replace: "ns:".into(),
        apps: None,
        channels: false,
    }])
    .unwrap();
    let mut memory = PrefixMemory::default();
    let mut out = BytesMut::with_capacity(4096);
    let unmatched = Request::from_args(["SET", "user:1000:profile", "value"]);
    let matched = Request::from_args(["HGETALL", "{AppA_4f2a9c}_Data"]);
    let two_keys = Request::from_args(["MSET", "{AppA_1}_Data", "a", "{AppB_2}_Data", "b"]);
    let cases = [
        ("no_rule_matches", &rules, &unmatched),
        ("fixed_prefix_rule_matches", &fixed, &unmatched),
        ("a_rule_matches", &rules, &matched),
        ("a_rule_matches_two_keys", &rules, &two_keys),
    ];
    let mut g = c.benchmark_group("rewrite");
    for (name, rules, req) in cases {
        let spec = lookup(req);
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut scope = Scope {
                    rules,
                    app: None,
                    memory: &mut memory,
                };
                let (outcome, _) = rewrite_into(&mut scope, spec, req, Some(&mut out), 16 * 1024);
                black_box(matches!(outcome, Outcome::Encoded))
            })
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    g.bench_function("hello_map_resp3", |b| {
        b.iter(|| {
            let mut e = Encoder::new(Proto::Resp3);
            e.map(3)
                .bulk(b"server")
                .bulk(b"redis")
                .bulk(b"proto")
                .int(3)
                .bulk(b"modules")
                .array(0);
            black_box(e.finish())
        })
    });
    g.bench_function("error_reply", |b| {
        b.iter(|| {
            black_box(rekey::protocol::encode::error(
                "ERR wrong number of arguments",
            ))
        })
    });
    g.finish();
}

fn reverse_scan(c: &mut Criterion) {
    let rules = rules();
    let mut memory = PrefixMemory::default();
    let req = Request::from_args(["SCAN", "0", "MATCH", "AppA_*", "COUNT", "100"]);
    let ctx = {
        let mut scope = Scope {
            rules: &rules,
            app: None,
            memory: &mut memory,
        };
        rewrite_request(&mut scope, lookup(&req), &req).ctx.unwrap()
    };
    let mut e = Encoder::new(Proto::Resp2);
    e.array(2).bulk(b"0").array(100);
    for i in 0..100 {
        e.bulk(format!("shared_{i:08x}").as_bytes());
    }
    let reply: Bytes = e.finish();
    let mut g = c.benchmark_group("reverse");
    g.throughput(Throughput::Elements(100));
    g.bench_function("scan_reply_100_keys", |b| {
        b.iter(|| {
            let scope = Scope {
                rules: &rules,
                app: None,
                memory: &mut memory,
            };
            black_box(map_reply(&scope, &ctx, reply.clone()))
        })
    });
    g.finish();
}

criterion_group!(benches, decode, rewrite, encode, reverse_scan);
criterion_main!(benches);
