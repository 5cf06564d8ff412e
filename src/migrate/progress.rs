//! What a running migration shows: a progress bar on a terminal (keys scanned of the
//! estimated total, moved, skipped, collisions, rate, ETA), a log line per second otherwise,
//! and nothing when asked to be quiet. Lines the migration prints for single keys (a dry
//! run's moves, collisions, failures) go to stdout without tearing the bar.

use crate::migrate::Counts;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A bar on the terminal (stderr).
    Bar,
    /// A line on stderr every second.
    Log,
    /// Nothing (per-key lines still go to stdout).
    Quiet,
}

impl Mode {
    /// A bar when stderr is a terminal, else the log.
    pub fn detect() -> Mode {
        if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Log
        }
    }
}

pub struct Progress {
    mode: Mode,
    bar: Option<ProgressBar>,
    started: Instant,
    last_log: Instant,
    /// Keys examined so far (an estimate: SCAN with MATCH does not say how many keys it
    /// walked past) and the estimated total, for the ETA.
    position: u64,
    total: u64,
    dry_run: bool,
}

impl Progress {
    pub fn new(mode: Mode, dry_run: bool) -> Progress {
        let bar = (mode == Mode::Bar).then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} ~{pos}/{len} keys scanned, ETA {eta}\n  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let now = Instant::now();
        Progress {
            mode,
            bar,
            started: now,
            last_log: now,
            position: 0,
            total: 0,
            dry_run,
        }
    }

    /// The estimated number of keys to examine (the nodes' key counts, once per SCAN pass).
    pub fn set_total(&mut self, total: u64) {
        self.total = total;
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    /// Where the scan is now (never goes back).
    pub fn set_position(&mut self, position: u64) {
        self.position = self.position.max(position.min(self.total));
        if let Some(bar) = &self.bar {
            bar.set_position(self.position);
        }
    }

    /// New counts: the bar's message, or a log line if a second has passed since the last.
    pub fn update(&mut self, counts: &Counts) {
        match self.mode {
            Mode::Bar => {
                if let Some(bar) = &self.bar {
                    bar.set_message(self.counts_text(counts));
                }
            }
            Mode::Log => {
                if self.last_log.elapsed() >= Duration::from_secs(1) {
                    self.last_log = Instant::now();
                    eprintln!("{}", self.log_line(counts));
                }
            }
            Mode::Quiet => {}
        }
    }

    /// A line on stdout (a dry run's move, a collision, a failure).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    /// Removes the bar (the summary follows).
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn counts_text(&self, c: &Counts) -> String {
        let moved = if self.dry_run { "would move" } else { "moved" };
        let rate = c.moved as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        format!(
            "matched {}, {moved} {}, skipped {}, collisions {}, failed {} ({rate:.0} keys/s)",
            c.matched, c.moved, c.skipped, c.collisions, c.failed
        )
    }

    fn log_line(&self, c: &Counts) -> String {
        let elapsed = self.started.elapsed();
        let eta = match self.position {
            0 => "?".to_string(),
            done => {
                let left = self.total.saturating_sub(done) as f64 / done as f64;
                format!("{:.0}s", elapsed.as_secs_f64() * left)
            }
        };
        format!(
            "migrate [{}s]: ~{}/{} keys scanned, {}, ETA {eta}",
            elapsed.as_secs(),
            self.position,
            self.total,
            self.counts_text(c)
        )
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
