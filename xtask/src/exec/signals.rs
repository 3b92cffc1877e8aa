//! Ctrl-C and SIGTERM. The first one sets a flag that every running task watches, stops our
//! child processes, and lets the command run its cleanup once; a second one exits at once
//! (status 130), leaving the run record for `cargo xtask clean --orphans`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// True once SIGINT or SIGTERM arrived.
pub fn interrupted() -> bool {
    FLAG.get().is_some_and(|f| f.load(Ordering::SeqCst))
}

/// Installs the handlers. `what` names the work for the message printed on the first signal;
/// `after` says how to finish the cleanup when a second signal cut it short.
pub fn install(what: String, after: &'static str) -> Result<()> {
    if FLAG.get().is_some() {
        return Ok(());
    }
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Order matters: the shutdown check runs before the flag is set, so it fires only on a
        // second signal.
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))
            .context("installing the signal handler")?;
        signal_hook::flag::register(sig, Arc::clone(&flag))
            .context("installing the signal handler")?;
    }
    let _ = FLAG.set(Arc::clone(&flag));
    std::thread::spawn(move || {
        while !flag.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(25));
        }
        announce(&format!(
            "\ninterrupted: stopping {what} and cleaning up (interrupt again to exit at once; {after})"
        ));
        crate::exec::process::terminate_all(Duration::from_secs(3));
    });
    Ok(())
}
/// Said at once, whatever the progress output is doing.
#[allow(clippy::print_stderr)]
fn announce(msg: &str) {
    eprintln!("{msg}");
}
