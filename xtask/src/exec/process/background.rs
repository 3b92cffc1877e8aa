//! A long-running child (a `kubectl port-forward`): started like any interruptible command (own
//! process group, registered for Ctrl-C), its output lines handed over as they come, stopped
//! (the whole group) when asked or dropped.

use std::io::{BufRead, BufReader};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use super::{signal_group, Cmd, Registered};

pub struct Background {
    reader: Arc<duct::ReaderHandle>,
    lines: Receiver<String>,
    pgid: u32,
    _registered: Registered,
}

impl Cmd {
    /// Starts the command in the background, stderr merged into the lines it reports.
    pub fn background(&self) -> Result<Background> {
        let reader = self.expression().stderr_to_stdout().reader();
        let reader = Arc::new(reader.map_err(|e| self.start_error(e))?);
        let pgid = reader.pids().first().copied().unwrap_or(0);
        let (tx, lines) = mpsc::channel();
        let r = Arc::clone(&reader);
        std::thread::spawn(move || {
            for line in BufReader::new(&*r).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Background {
            reader,
            lines,
            pgid,
            _registered: Registered::new(pgid, None),
        })
    }
}

impl Background {
    /// The next output line within `t`; `None` on timeout or when the output ended.
    pub fn line(&self, t: Duration) -> Option<String> {
        self.lines.recv_timeout(t).ok()
    }

    /// Whether the child still runs.
    pub fn running(&self) -> bool {
        matches!(self.reader.try_wait(), Ok(None))
    }

    /// Stops the child and its group.
    pub fn stop(&self) {
        signal_group(self.pgid, libc::SIGTERM);
        let _ = self.reader.kill();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}
