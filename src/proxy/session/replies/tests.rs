//! The reply queue's order, runs and slots, without a session.

use super::*;

fn info(blocking: bool, silent: bool) -> SlotInfo {
    SlotInfo {
        blocking,
        silent,
        ctx: None,
        cmd: 0,
        started: Instant::now(),
        resend: None,
        redirects: 0,
    }
}

fn frames(q: &mut ReplyQueue) -> Vec<Bytes> {
    std::iter::from_fn(|| q.pop_ready())
        .filter(|r| !r.info.as_ref().is_some_and(|i| i.silent))
        .map(|r| r.frame)
        .collect()
}

#[test]
fn replies_leave_in_request_order() {
    let mut q = ReplyQueue::default();
    let a = q.expect(info(false, false));
    q.local(Bytes::from_static(b"+L\r\n"), info(false, false));
    let b = q.expect(info(true, false));
    q.push(Bytes::from_static(b">P\r\n"));
    assert_eq!(
        q.fill(b, Bytes::from_static(b"+B\r\n")),
        Some(Filled { blocking: true })
    );
    assert!(q.pop_ready().is_none());
    q.fill(a, Bytes::from_static(b"+A\r\n"));
    assert_eq!(
        frames(&mut q),
        vec![&b"+A\r\n"[..], b"+L\r\n", b"+B\r\n", b">P\r\n"]
    );
    assert!(q.is_empty());
    assert_eq!(q.fill(a, Bytes::new()), None);
}

#[test]
fn plain_runs_leave_whole_only_from_the_front() {
    let mut q = ReplyQueue::default();
    let a = q.expect(info(false, false));
    let b = q.expect(info(false, false));
    let c = q.expect(info(false, true));
    let mut seen = 0;
    assert!(!q.take_plain_run(b, 1, |_, n| seen += n), "not the oldest");
    assert!(
        !q.take_plain_run(a, 3, |_, n| seen += n),
        "a silent slot needs its own work"
    );
    assert_eq!(seen, 0);
    assert!(q.take_plain_run(a, 2, |_, n| seen += n));
    assert_eq!(seen, 2);
    assert_eq!(q.len(), 1);
    q.push(Bytes::from_static(b">P\r\n"));
    let d = q.expect(info(false, false));
    assert_eq!(
        q.fill(d, Bytes::from_static(b"+D\r\n")),
        Some(Filled { blocking: false })
    );
    q.fill(c, Bytes::from_static(b"+C\r\n"));
    assert_eq!(frames(&mut q), vec![&b">P\r\n"[..], b"+D\r\n"]);
}

#[test]
fn silent_slots_are_marked() {
    let mut q = ReplyQueue::default();
    let a = q.expect(info(false, true));
    q.local(Bytes::from_static(b"+X\r\n"), info(false, false));
    q.fill(a, Bytes::from_static(b"+A\r\n"));
    assert_eq!(frames(&mut q), vec![&b"+X\r\n"[..]]);
}

fn plain_at(cmd: u16, started: Instant) -> SlotInfo {
    SlotInfo {
        cmd,
        started,
        ..info(false, false)
    }
}

#[test]
fn a_pipeline_shares_one_slot_and_leaves_in_pieces() {
    let mut q = ReplyQueue::default();
    let t = Instant::now();
    let first = q.expect(plain_at(1, t));
    for _ in 1..16 {
        q.expect(plain_at(1, t));
    }
    assert_eq!((q.len(), q.slots.len()), (16, 1));
    // Another command, or another read, starts a new run.
    q.expect(plain_at(2, t));
    q.expect(plain_at(1, t + std::time::Duration::from_millis(1)));
    assert_eq!((q.len(), q.slots.len()), (18, 3));
    let mut seen = Vec::new();
    assert!(
        !q.take_plain_run(first + 1, 5, |_, n| seen.push(n)),
        "not the oldest"
    );
    assert!(q.take_plain_run(first, 5, |i, n| seen.push(n + i.cmd as u32 * 100)));
    assert!(q.take_plain_run(first + 5, 13, |i, n| seen.push(n + i.cmd as u32 * 100)));
    assert_eq!(seen, [105, 111, 201, 101]);
    assert!(q.is_empty());
    assert_eq!(q.len(), 0);
}

#[test]
fn a_reply_inside_a_run_splits_it() {
    let mut q = ReplyQueue::default();
    let t = Instant::now();
    let seqs: Vec<u64> = (0..6).map(|_| q.expect(plain_at(1, t))).collect();
    // Replies one by one, out of the front's order of arrival: the middle first.
    q.fill(seqs[3], Bytes::from_static(b"+3\r\n"));
    assert_eq!(q.slots.len(), 3);
    assert!(q.pop_ready().is_none());
    assert!(
        !q.take_plain_run(seqs[0], 4, |_, _| ()),
        "an answered request is no longer plain"
    );
    assert!(q.waiting_mut(seqs[0]).is_some());
    q.fill(seqs[0], Bytes::from_static(b"+0\r\n"));
    q.fill(seqs[5], Bytes::from_static(b"+5\r\n"));
    assert_eq!(q.fill(seqs[5], Bytes::new()), None, "already answered");
    for i in [1, 2, 4] {
        q.fill(seqs[i], Bytes::from(format!("+{i}\r\n")));
    }
    assert_eq!(q.len(), 6);
    assert_eq!(
        frames(&mut q),
        vec![
            &b"+0\r\n"[..],
            b"+1\r\n",
            b"+2\r\n",
            b"+3\r\n",
            b"+4\r\n",
            b"+5\r\n"
        ]
    );
    assert_eq!((q.len(), q.fill(seqs[2], Bytes::new())), (0, None));
}

#[test]
fn a_run_answered_at_once_leaves_as_one_piece() {
    let mut q = ReplyQueue::default();
    let t = Instant::now();
    let a = q.expect_plain(1, t, 3);
    let b = q.expect_plain(2, t, 2);
    assert!(!q.fill_run(a, 2, Bytes::new()), "not the whole run");
    assert!(
        !q.fill_run(a + 1, 2, Bytes::new()),
        "not where a run starts"
    );
    assert!(q.fill_run(b, 2, Bytes::from_static(b"+C\r\n+D\r\n")));
    assert!(!q.fill_run(b, 2, Bytes::new()), "already answered");
    assert!(q.pop_ready().is_none());
    q.fill(a + 1, Bytes::from_static(b"+B\r\n"));
    assert!(q.fill_run(a, 1, Bytes::from_static(b"+A\r\n")));
    q.fill(a + 2, Bytes::from_static(b"+B2\r\n"));
    let counts: Vec<(u32, Bytes)> = std::iter::from_fn(|| q.pop_ready())
        .map(|r| (r.count, r.frame))
        .collect();
    assert_eq!(
        counts,
        vec![
            (1, Bytes::from_static(b"+A\r\n")),
            (1, Bytes::from_static(b"+B\r\n")),
            (1, Bytes::from_static(b"+B2\r\n")),
            (2, Bytes::from_static(b"+C\r\n+D\r\n")),
        ]
    );
    assert_eq!(q.len(), 0);
}

#[test]
fn pushes_between_runs_keep_their_place() {
    let mut q = ReplyQueue::default();
    let t = Instant::now();
    let a = q.expect(plain_at(1, t));
    q.expect(plain_at(1, t));
    q.push(Bytes::from_static(b">P\r\n"));
    let c = q.expect(plain_at(1, t));
    assert_eq!(q.slots.len(), 3, "a push ends the run");
    q.fill(c, Bytes::from_static(b"+C\r\n"));
    q.fill(a + 1, Bytes::from_static(b"+B\r\n"));
    q.fill(a, Bytes::from_static(b"+A\r\n"));
    assert_eq!(
        frames(&mut q),
        vec![&b"+A\r\n"[..], b"+B\r\n", b">P\r\n", b"+C\r\n"]
    );
}

#[test]
fn the_lanes_plain_requests_join_runs_like_any_other() {
    let mut q = ReplyQueue::default();
    let t = Instant::now();
    let a = q.expect_plain(1, t, 1);
    q.expect(plain_at(1, t));
    q.expect_plain(1, t, 1);
    q.expect(info(false, true)); // silent: a slot of its own
    q.expect_plain(1, t, 1);
    assert_eq!((q.len(), q.slots.len()), (5, 3));
    let mut n = 0;
    assert!(q.take_plain_run(a, 3, |_, k| n += k));
    assert_eq!((n, q.len()), (3, 2));
}
