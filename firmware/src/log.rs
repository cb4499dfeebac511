//! events.jsonl (one object per line, shared by all devices, in order) and the
//! progress lines on stderr.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use serde_json::{Map, Value};
use tokio::time::Instant;

pub struct Logger {
    t0: Instant,
    file: Option<Mutex<BufWriter<File>>>,
    quiet: bool,
    /// Lines written so far (for tests and the end-of-run flush).
    write_error: Mutex<Option<String>>,
}

/// Seconds, rounded to the microsecond.
pub fn secs(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

impl Logger {
    /// `path`: where events.jsonl goes (none without `--out`).
    pub fn new(t0: Instant, path: Option<&Path>, quiet: bool) -> Result<Logger, String> {
        let file = match path {
            Some(p) => Some(Mutex::new(BufWriter::new(
                File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()))?,
            ))),
            None => None,
        };
        Ok(Logger {
            t0,
            file,
            quiet,
            write_error: Mutex::new(None),
        })
    }

    /// Seconds since the program started.
    pub fn t(&self, at: Instant) -> f64 {
        secs(at.saturating_duration_since(self.t0).as_secs_f64())
    }

    pub fn now(&self) -> f64 {
        self.t(Instant::now())
    }

    /// Logs one event now; returns its `t`.
    pub fn log(&self, device: &str, conn: u32, turn: usize, event: &str, fields: Value) -> f64 {
        let mut obj = Map::new();
        // The time is taken under the lock so lines are in time order.
        let guard = self.file.as_ref().map(|f| f.lock().unwrap());
        let t = self.now();
        obj.insert("t".into(), t.into());
        obj.insert("device".into(), device.into());
        obj.insert("conn".into(), conn.into());
        obj.insert("turn".into(), turn.into());
        obj.insert("event".into(), event.into());
        if let Value::Object(m) = fields {
            obj.extend(m);
        }
        let line = Value::Object(obj);
        if let Some(mut w) = guard {
            if let Err(e) = writeln!(w, "{line}") {
                self.write_error
                    .lock()
                    .unwrap()
                    .get_or_insert(format!("cannot write events.jsonl: {e}"));
            }
        }
        if !self.quiet && progress(event) {
            let Value::Object(mut m) = line else {
                unreachable!()
            };
            for k in ["t", "device", "conn", "turn", "event"] {
                m.shift_remove(k);
            }
            let rest = if m.is_empty() {
                String::new()
            } else {
                format!(" {}", Value::Object(m))
            };
            eprintln!("[{t:8.3}] {device} c{conn} t{turn} {event}{rest}");
        }
        t
    }

    /// Flushes events.jsonl; the first write error, if any.
    pub fn finish(&self) -> Result<(), String> {
        if let Some(f) = &self.file {
            f.lock()
                .unwrap()
                .flush()
                .map_err(|e| format!("cannot write events.jsonl: {e}"))?;
        }
        match self.write_error.lock().unwrap().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Events worth a progress line (not every frame and packet).
fn progress(event: &str) -> bool {
    !matches!(event, "frame" | "audio" | "hello_chunk" | "playback_done")
}
