//! The recorded history of a run: every operation's invocation and completion, and
//! every nemesis action, in the order they happened, as JSON lines.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How an operation ended (Jepsen's vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    /// The operation was sent.
    Invoke,
    /// It definitely happened.
    Ok,
    /// It definitely did not happen.
    Fail,
    /// Unknown: it may or may not have happened (a timeout, a lost reply).
    Info,
}

/// One history entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Op {
    /// Client process number, or `nemesis`.
    pub process: String,
    #[serde(rename = "type")]
    pub kind: OpType,
    /// The operation (`create-venue`, `kill`, `start`, ...).
    pub f: String,
    pub value: Value,
    /// Milliseconds since the run started.
    pub time_ms: u64,
}

/// A history being recorded by many tasks at once.
#[derive(Clone)]
pub struct History {
    started: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            ops: Arc::default(),
        }
    }

    /// Appends an entry stamped with the run's clock.
    pub fn record(&self, process: impl Into<String>, kind: OpType, f: &str, value: Value) {
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        // Stamped under the lock, so times never decrease along the history.
        ops.push(Op {
            process: process.into(),
            kind,
            f: f.to_string(),
            value,
            time_ms: self.started.elapsed().as_millis() as u64,
        });
    }

    /// Milliseconds since the run started, on the history's clock.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// A copy of the entries so far.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Writes the history as JSON lines.
    pub fn write_jsonl(&self, out: &mut impl Write) -> std::io::Result<()> {
        for op in self.ops() {
            serde_json::to_writer(&mut *out, &op)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }
}
