//! A session's mailbox: where upstream connections (and rekey's own senders: a `MONITOR`
//! feed, a cluster fan-out) put the values for one receiver, which takes them in order.
//!
//! Why not tokio's unbounded mpsc channel: it allocates, for every channel as it is made, a
//! block of 32 slots (2 KiB of [`Delivery`](super::Delivery) values) and a cache-padded
//! channel head (0.5 KiB). Every client has one, so that was a third of what an idle client
//! costs rekey. A mailbox is a queue behind a lock that starts empty and grows only as values
//! come. A session and the connections that answer it run on one worker thread, so the lock
//! is not contended; where it is (an identity's own upstream on another worker), it is held
//! only to push or pop one value.
//!
//! Semantics are those of the unbounded channel rekey used: sending never waits; sending to a
//! mailbox whose receiver is gone fails and gives the value back; receiving yields `None` once
//! every sender is gone and the queue is empty.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Makes a mailbox: its senders (cloned as needed) and its one receiver.
pub fn mailbox<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        senders: AtomicUsize::new(1),
        state: Mutex::new(State {
            queue: VecDeque::new(),
            waker: None,
            closed: false,
        }),
    });
    (
        Sender {
            shared: Arc::clone(&shared),
        },
        Receiver { shared },
    )
}

struct Shared<T> {
    /// Live senders; the receiver sees the end when this reaches 0 and the queue is empty.
    senders: AtomicUsize,
    state: Mutex<State<T>>,
}

struct State<T> {
    queue: VecDeque<T>,
    /// The receiver's task, waiting for a value.
    waker: Option<Waker>,
    /// The receiver is gone: sends fail.
    closed: bool,
}

/// Room kept for values once the queue is empty again: a burst's larger queue is given back.
const KEEP_EMPTY: usize = 256;

impl<T> State<T> {
    /// The first value; the queue's memory is given back when a burst left it large and empty.
    fn take(&mut self) -> Option<T> {
        let value = self.queue.pop_front()?;
        if self.queue.is_empty() && self.queue.capacity() > KEEP_EMPTY {
            self.queue = VecDeque::new();
        }
        Some(value)
    }
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding the lock; a poisoned one holds a consistent queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending side of a mailbox; cloning it adds a sender.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Puts `value` in the mailbox and wakes the receiver; gives it back when the receiver is
    /// gone.
    pub fn send(&self, value: T) -> Result<(), T> {
        let waker = {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(value);
            }
            state.queue.push_back(value);
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// True when both send to the same mailbox.
    pub fn same_channel(&self, other: &Sender<T>) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// True when the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Sender {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last sender: a waiting receiver learns that nothing more will come.
            let waker = self.shared.lock().waker.take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

/// The receiving side of a mailbox.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// The next value; `None` once every sender is gone and nothing is left. Cancel-safe: a
    /// value is taken only when it is returned.
    pub async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`Receiver::recv`] as a poll. Each value received spends the task's cooperative
    /// budget, as tokio's own channels do: a session that deliveries from other threads
    /// (a `MONITOR` feed) never leave idle still lets the other clients of its worker run.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let budget = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let mut state = self.shared.lock();
        if let Some(value) = state.take() {
            budget.made_progress();
            return Poll::Ready(Some(value));
        }
        if self.shared.senders.load(Ordering::Acquire) == 0 {
            budget.made_progress();
            return Poll::Ready(None);
        }
        match &state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next value if one is there now.
    pub fn try_recv(&mut self) -> Option<T> {
        self.shared.lock().take()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let left = {
            let mut state = self.shared.lock();
            state.closed = true;
            state.waker = None;
            std::mem::take(&mut state.queue)
        };
        drop(left); // outside the lock: dropping a value may run arbitrary code
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn values_come_in_order_and_end_when_the_senders_are_gone() {
        let (tx, mut rx) = mailbox();
        let tx2 = tx.clone();
        tx.send(1).unwrap();
        tx2.send(2).unwrap();
        assert!(tx.same_channel(&tx2));
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.try_recv(), None);
        tx.send(3).unwrap();
        drop((tx, tx2));
        assert_eq!(
            rx.recv().await,
            Some(3),
            "what was sent is received after the end"
        );
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_send_and_by_the_last_sender_leaving() {
        let (tx, mut rx) = mailbox::<u32>();
        let waiting = tokio::spawn(async move { (rx.recv().await, rx.recv().await) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.send(7).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let other = tx.clone();
        drop(tx);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "one sender is still there");
        drop(other);
        let got = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert_eq!(got.unwrap().unwrap(), (Some(7), None));
    }

    #[tokio::test]
    async fn sending_to_a_gone_receiver_gives_the_value_back() {
        let (tx, rx) = mailbox();
        let (other, _rx) = mailbox();
        assert!(!tx.same_channel(&other));
        tx.send("kept".to_string()).unwrap();
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.send("back".to_string()), Err("back".to_string()));
    }

    #[tokio::test]
    async fn a_burst_leaves_no_large_queue_behind() {
        let (tx, mut rx) = mailbox();
        for i in 0..10_000 {
            tx.send(i).unwrap();
        }
        while rx.try_recv().is_some() {}
        assert!(rx.shared.lock().queue.capacity() <= KEEP_EMPTY);
        tx.send(1).unwrap();
        assert_eq!(rx.recv().await, Some(1));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_receiver_that_always_has_values_lets_other_tasks_run() {
        let (tx, mut rx) = mailbox();
        for i in 0..10_000 {
            tx.send(i).unwrap();
        }
        let other_ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&other_ran);
        tokio::spawn(async move { flag.store(true, Ordering::Relaxed) });
        let mut seen_after = None;
        for i in 0..10_000 {
            assert_eq!(rx.recv().await, Some(i));
            if seen_after.is_none() && other_ran.load(Ordering::Relaxed) {
                seen_after = Some(i);
            }
        }
        let at = seen_after.expect("the other task ran while values were waiting");
        assert!(at < 1_000, "it ran only after {at} values");
    }

    #[tokio::test]
    async fn senders_on_other_threads_reach_the_receiver() {
        let (tx, mut rx) = mailbox();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        tx.send((t, i)).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        let mut next = [0; 4];
        while let Some((t, i)) = rx.recv().await {
            assert_eq!(next[t], i, "each sender's values in its order");
            next[t] += 1;
        }
        assert_eq!(next, [1000; 4]);
        for t in threads {
            t.join().unwrap();
        }
    }
}
