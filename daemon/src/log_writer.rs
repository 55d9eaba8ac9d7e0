//! The log sink: lines go into a memory buffer on the request path and a background thread
//! writes them out in batches.
//!
//! Why not one write per line, or a channel per line (tracing-appender)? Both cost a system call
//! or a thread wake-up for every verification, which on a 2-core host measurably cut verify
//! throughput. Here a request only appends to a buffer under a short lock; the writer thread is
//! woken once when the buffer goes from empty to non-empty, waits [`BATCH_WINDOW`] for more lines,
//! and writes them all in one call. An idle daemon causes no wake-ups. When the sink is slower than
//! the request rate and the buffer reaches its limit, new lines are dropped and counted
//! (`/status` reports the count) rather than slowing verification or growing without bound.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;

/// How long the writer waits for more lines before writing a batch.
pub const BATCH_WINDOW: Duration = Duration::from_millis(10);
/// Most bytes of log lines held in memory before lines are dropped.
pub const BUFFER_LIMIT: usize = 32 * 1024 * 1024;

struct Shared {
    buffer: Mutex<Vec<u8>>,
    not_empty: Condvar,
    closed: AtomicBool,
    dropped: AtomicU64,
    limit: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.buffer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Counts lines dropped because the sink could not keep up.
#[derive(Clone)]
pub struct DropCounter(Arc<Shared>);

impl DropCounter {
    pub fn dropped_lines(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

/// The `MakeWriter` handed to tracing.
#[derive(Clone)]
pub struct BatchWriter(Arc<Shared>);

/// Stops the writer thread on drop, after it wrote everything buffered.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl BatchWriter {
    /// Starts the writer thread writing to `sink`.
    pub fn spawn(
        sink: impl Write + Send + 'static,
        limit: usize,
    ) -> io::Result<(BatchWriter, FlushGuard)> {
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Vec::with_capacity(64 * 1024)),
            not_empty: Condvar::new(),
            closed: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            limit,
        });
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("heare-authd-log".into())
            .spawn(move || write_batches(&for_thread, sink))?;
        Ok((
            BatchWriter(shared.clone()),
            FlushGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }

    pub fn counter(&self) -> DropCounter {
        DropCounter(self.0.clone())
    }

    /// Appends whole lines (each ending in a newline), or drops and counts them when the buffer
    /// is at its limit.
    pub fn append(&self, lines: &[u8]) {
        let _ = LineSink(&self.0).write(lines);
    }
}

fn write_batches(shared: &Shared, mut sink: impl Write) {
    let mut batch = Vec::with_capacity(64 * 1024);
    loop {
        {
            let mut buffer = shared.lock();
            while buffer.is_empty() && !shared.closed.load(Ordering::Acquire) {
                buffer = shared
                    .not_empty
                    .wait(buffer)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if buffer.is_empty() {
                return;
            }
        }
        if !shared.closed.load(Ordering::Acquire) {
            std::thread::sleep(BATCH_WINDOW);
        }
        std::mem::swap(&mut batch, &mut *shared.lock());
        // A failing sink (closed stdout, full disk) must not stop the daemon: the lines are lost.
        let _ = sink.write_all(&batch).and_then(|()| sink.flush());
        batch.clear();
        if batch.capacity() > 1024 * 1024 {
            batch.shrink_to(64 * 1024);
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.not_empty.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One event's line, appended to the shared buffer.
pub struct LineSink<'a>(&'a Shared);

impl Write for LineSink<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut buffer = self.0.lock();
        if buffer.len() + bytes.len() > self.0.limit {
            drop(buffer);
            let lines = bytes.iter().filter(|&&b| b == b'\n').count().max(1);
            self.0.dropped.fetch_add(lines as u64, Ordering::Relaxed);
            return Ok(bytes.len());
        }
        let was_empty = buffer.is_empty();
        buffer.extend_from_slice(bytes);
        drop(buffer);
        if was_empty {
            self.0.not_empty.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = LineSink<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        LineSink(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<u8>>>, Arc<AtomicU64>);

    impl Write for Collect {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_in_few_writes_and_all_are_flushed_on_drop() {
        let sink = Collect::default();
        let (writer, guard) = BatchWriter::spawn(sink.clone(), 1 << 20).unwrap();
        for n in 0..1000 {
            writer
                .make_writer()
                .write_all(format!("line {n}\n").as_bytes())
                .unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[999], "line 999");
        assert!(sink.1.load(Ordering::Relaxed) < 100, "written in batches");
        assert_eq!(writer.counter().dropped_lines(), 0);
    }

    #[test]
    fn a_full_buffer_drops_and_counts_lines() {
        struct Stuck;
        impl Write for Stuck {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                std::thread::sleep(Duration::from_millis(200));
                Ok(bytes.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (writer, _guard) = BatchWriter::spawn(Stuck, 100).unwrap();
        for _ in 0..50 {
            writer.make_writer().write_all(b"0123456789\n").unwrap();
        }
        assert!(
            writer.counter().dropped_lines() >= 30,
            "{}",
            writer.counter().dropped_lines()
        );
    }
}
