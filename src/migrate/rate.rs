//! `--rate N`: at most N keys moved per second, on average from the start, in batches small
//! enough (a twentieth of a second's worth) that Redis sees a steady trickle, not bursts.

use std::time::Duration;
use tokio::time::Instant;

pub struct Rate {
    per_sec: Option<u32>,
    start: Instant,
    used: u64,
}

impl Rate {
    pub fn new(per_sec: Option<u32>) -> Rate {
        Rate {
            per_sec: per_sec.filter(|&n| n > 0),
            start: Instant::now(),
            used: 0,
        }
    }

    /// The most keys to move in one batch.
    pub fn batch(&self, max: usize) -> usize {
        match self.per_sec {
            Some(n) => (n as usize / 20).clamp(1, max),
            None => max,
        }
    }

    /// Waits until `n` more keys are within the rate.
    pub async fn take(&mut self, n: usize) {
        let Some(per_sec) = self.per_sec else {
            return;
        };
        // The first keys of a batch may go now; the batch's last is due at used / rate.
        let due = self.start + Duration::from_secs_f64(self.used as f64 / per_sec as f64);
        self.used += n as u64;
        tokio::time::sleep_until(due).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_to_the_rate() {
        let mut rate = Rate::new(Some(1000));
        assert_eq!(rate.batch(500), 50);
        let start = Instant::now();
        for _ in 0..10 {
            rate.take(50).await;
        }
        // 500 keys at 1,000/s: the last batch may start at 0.45 s.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(440), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        let mut free = Rate::new(None);
        free.take(1_000_000).await;
        assert_eq!(free.batch(500), 500);
    }
}
