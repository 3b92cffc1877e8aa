//! Helpers of the process layer: the exit status of a finished reader, the watchdog that
//! enforces time limits on streamed commands, and following output files.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{signal_group, LineSink};

/// The exit status of a reader whose output ended (it waits for the child at EOF).
pub(super) fn reader_status(reader: &duct::ReaderHandle, what: &str) -> Result<ExitStatus> {
    for _ in 0..500 {
        if let Some(out) = reader
            .try_wait()
            .with_context(|| format!("waiting for `{what}`"))?
        {
            return Ok(out.status);
        }
        thread::sleep(Duration::from_millis(10));
    }
    bail!("`{what}` closed its output but did not exit within 5s")
}

/// Kills a process group once a time limit has passed, unless dropped before.
pub(super) struct Watchdog {
    fired: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
}

impl Watchdog {
    pub(super) fn start(pgid: u32, limit: Option<Duration>) -> Watchdog {
        let (fired, done) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        if let Some(limit) = limit {
            let (f, d) = (fired.clone(), done.clone());
            thread::spawn(move || {
                let deadline = Instant::now() + limit;
                while !d.load(Ordering::SeqCst) {
                    if Instant::now() >= deadline {
                        f.store(true, Ordering::SeqCst);
                        signal_group(pgid, libc::SIGKILL);
                        return;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            });
        }
        Watchdog { fired, done }
    }

    pub(super) fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

pub(super) fn pid_of(handle: &duct::Handle) -> u32 {
    handle.pids().first().copied().unwrap_or(0)
}

/// Hands every complete line of the files to `f` as they grow, until `done` and drained.
pub(super) fn follow_files(paths: &[PathBuf; 2], done: &AtomicBool, mut f: LineSink) {
    let mut offsets = [0u64; 2];
    let mut partial = [String::new(), String::new()];
    loop {
        let finished = done.load(Ordering::SeqCst);
        for i in 0..2 {
            let Ok(mut file) = File::open(&paths[i]) else {
                continue;
            };
            let mut buf = String::new();
            if file.seek(SeekFrom::Start(offsets[i])).is_ok() {
                let _ = file.read_to_string(&mut buf);
            }
            offsets[i] += buf.len() as u64;
            partial[i].push_str(&buf);
            while let Some(nl) = partial[i].find('\n') {
                let line: String = partial[i].drain(..=nl).collect();
                f(line.trim_end_matches(['\n', '\r']));
            }
        }
        if finished {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
}
