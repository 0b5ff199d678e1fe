//! Lines written in batches by a thread of their own, as nginx's buffered `access_log`.
//!
//! Each thread that logs appends its lines to a buffer of its own (a mutex nobody else takes but
//! the writer, for the instant it swaps the buffer for an empty one). The writer sleeps until a
//! line is buffered, lets lines gather for [`INTERVAL`] (less when a buffer passes [`KICK`] or a
//! flush is asked for), then takes every thread's buffer and writes them all with one
//! `write_all`: one `write(2)` per batch rather than one per line. Bounded: a thread's buffer
//! holds at most [`CAP`] bytes; while the writer is stuck (stderr a pipe nobody reads), lines past
//! that are dropped and counted ([`Batch::dropped`]), and no call ever waits for the writer.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long buffered lines may wait for the writer, at most (unless it is stuck).
pub(super) const INTERVAL: Duration = Duration::from_millis(100);
/// A thread's buffer this full wakes the writer at once.
pub(super) const KICK: usize = 32 * 1024;
/// A thread's buffer this full takes no more lines: they are dropped and counted.
pub(super) const CAP: usize = 512 * 1024;
/// What the writer's batch keeps of its memory after a burst.
const KEEP: usize = 256 * 1024;

/// How lines are written: `[log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// tracing-subscriber's text, control characters escaped as [`super::EscapeControls`] does.
    Text,
    /// One JSON object per line.
    Json,
}

/// The buffers, the writer's state and the count of dropped lines.
pub(super) struct Batch {
    /// Tells this batch's thread buffers from another's (tests make several).
    id: u64,
    format: Format,
    slots: Mutex<Vec<Arc<Slot>>>,
    state: Mutex<State>,
    /// Wakes the writer: a first line buffered, a full buffer, a flush asked for.
    wake: Condvar,
    /// Tells flushes their batch was written.
    written: Condvar,
    /// A line is buffered since the writer last took the buffers.
    pending: AtomicBool,
    /// A buffer passed [`KICK`].
    kicked: AtomicBool,
    dropped: AtomicU64,
}

/// One thread's buffer.
#[derive(Default)]
struct Slot {
    buf: Mutex<Vec<u8>>,
}

/// Flushes asked for and done, by number.
#[derive(Default)]
struct State {
    asked: u64,
    done: u64,
}

thread_local! {
    /// This thread's buffer, and the batch it belongs to.
    static SLOT: RefCell<Option<(u64, Arc<Slot>)>> = const { RefCell::new(None) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Batch {
    /// Buffers for lines in `format`; nothing is written before [`Batch::spawn`].
    pub(super) fn new(format: Format) -> Self {
        static IDS: AtomicU64 = AtomicU64::new(0);
        Batch {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            format,
            slots: Mutex::default(),
            state: Mutex::default(),
            wake: Condvar::new(),
            written: Condvar::new(),
            pending: AtomicBool::new(false),
            kicked: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        }
    }

    /// Starts the writer thread, writing to `out`.
    pub(super) fn spawn(&'static self, out: Box<dyn Write + Send>) {
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || self.run(out))
            .expect("a thread for the access log");
    }

    /// Appends a line (`line` writes it, whole, escaped, ending in a newline) to this thread's
    /// buffer, or drops it when the buffer is full.
    pub(super) fn push(&self, line: impl FnOnce(&mut Vec<u8>, Format)) {
        SLOT.with_borrow_mut(|slot| {
            if !matches!(slot, Some((id, _)) if *id == self.id) {
                *slot = Some((self.id, self.register()));
            }
            let (_, slot) = slot.as_ref().expect("set above");
            let mut buf = lock(&slot.buf);
            let start = buf.len();
            if start >= CAP {
                drop(buf);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            line(&mut buf, self.format);
            let len = buf.len();
            drop(buf);
            if len >= KICK {
                if !self.kicked.load(Ordering::Relaxed) && !self.kicked.swap(true, Ordering::AcqRel) {
                    self.notify();
                }
            } else if start == 0 && !self.pending.load(Ordering::Relaxed) && !self.pending.swap(true, Ordering::AcqRel)
            {
                self.notify();
            }
        });
    }

    /// Writes everything buffered now; waits for it at most `timeout`.
    pub(super) fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.state);
        st.asked += 1;
        let want = st.asked;
        self.wake.notify_one();
        while st.done < want {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            st = self
                .written
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Asks for everything buffered now to be written, without waiting.
    pub(super) fn flush_soon(&self) {
        lock(&self.state).asked += 1;
        self.wake.notify_one();
    }

    /// Lines dropped because the writer was behind.
    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn register(&self) -> Arc<Slot> {
        let slot = Arc::<Slot>::default();
        lock(&self.slots).push(Arc::clone(&slot));
        slot
    }

    /// Wakes the writer (under its lock, so that it cannot miss it between its check and its wait).
    fn notify(&self) {
        let _st = lock(&self.state);
        self.wake.notify_one();
    }

    fn run(&self, mut out: Box<dyn Write + Send>) {
        let (mut batch, mut spare) = (Vec::new(), Vec::new());
        loop {
            let asked = {
                let mut st = lock(&self.state);
                while !self.pending.load(Ordering::Acquire) && st.asked == st.done {
                    st = self.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
                }
                if st.asked == st.done && !self.kicked.load(Ordering::Acquire) {
                    // Let lines gather, unless a flush or a full buffer asks sooner.
                    st = self
                        .wake
                        .wait_timeout(st, INTERVAL)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                st.asked
            };
            self.pending.store(false, Ordering::Release);
            self.kicked.store(false, Ordering::Release);
            self.collect(&mut batch, &mut spare);
            if !batch.is_empty() {
                // Nowhere to report a failure to write the log but the log.
                let _ = out.write_all(&batch).and_then(|()| out.flush());
                batch.clear();
                batch.shrink_to(KEEP);
            }
            let mut st = lock(&self.state);
            st.done = st.done.max(asked);
            self.written.notify_all();
        }
    }

    /// Takes every thread's lines into `batch` (as the writer does).
    #[cfg(test)]
    pub(super) fn collect_into(&self, batch: &mut Vec<u8>) {
        self.collect(batch, &mut Vec::new());
    }

    /// Takes every thread's lines into `batch`, in turn: each thread's buffer is swapped for
    /// `spare` (emptied), so a thread waits for no copy. Buffers of threads gone are forgotten.
    fn collect(&self, batch: &mut Vec<u8>, spare: &mut Vec<u8>) {
        lock(&self.slots).retain(|slot| {
            std::mem::swap(&mut *lock(&slot.buf), spare);
            batch.extend_from_slice(spare);
            spare.clear();
            Arc::strong_count(slot) > 1
        });
    }
}
