//! Ctrl-C and SIGTERM as a state every part of a run can see. A signal must not leave
//! hosts in a state nobody reported: the scheduler stops starting tasks, the executor
//! applies no further change, connections send TERM to the process groups of the
//! commands they are running on the hosts, and the run ends with the recap (marked
//! interrupted) and exit code 130. Atomic writes need nothing special: one in the
//! control shell finishes (it is short), one whose stdin is cut off is never renamed
//! (see `connection::shell::write_script`).

use std::time::Duration;

use tokio::sync::watch;

/// How long tasks already running get to end after the interrupt (their commands were
/// sent TERM) before they are abandoned and reported as interrupted.
pub const GRACE: Duration = Duration::from_secs(10);

/// Exit code of an interrupted run: 128 + SIGINT, what shells expect of a program
/// stopped by Ctrl-C (also used for SIGTERM, so callers see one code for "interrupted").
pub const EXIT_CODE: i32 = 130;

/// Whether (and by which signal) the run was interrupted. Cheap to clone and to ask.
#[derive(Debug, Clone)]
pub struct Interrupt {
    tx: std::sync::Arc<watch::Sender<Option<&'static str>>>,
}

impl Default for Interrupt {
    fn default() -> Self {
        Interrupt {
            tx: std::sync::Arc::new(watch::channel(None).0),
        }
    }
}

impl Interrupt {
    /// Mark the run interrupted by `signal` ("SIGINT"); the first signal is kept.
    pub fn trigger(&self, signal: &'static str) {
        self.tx.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(signal);
                true
            } else {
                false
            }
        });
    }

    /// The signal that interrupted the run, if one did.
    pub fn signal(&self) -> Option<&'static str> {
        *self.tx.borrow()
    }

    pub fn is_set(&self) -> bool {
        self.signal().is_some()
    }

    /// Resolves once the run is interrupted (at once if it already is).
    pub async fn wait(&self) -> &'static str {
        let mut rx = self.tx.subscribe();
        let got = rx.wait_for(Option::is_some).await.map(|s| s.unwrap_or("signal"));
        match got {
            Ok(s) => s,
            // The sender lives in `self`: it cannot be gone while we wait.
            Err(_) => std::future::pending().await,
        }
    }

    /// Listen for SIGINT and SIGTERM for the rest of the process: the first marks the
    /// run interrupted, a second one ends the process at once with [`EXIT_CODE`] (the
    /// operator's way out when the hosts do not let go). Must be called inside a tokio
    /// runtime; `Err` when the handlers cannot be installed.
    pub fn listen(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let this = self.clone();
        tokio::spawn(async move {
            let next = async |int: &mut tokio::signal::unix::Signal,
                              term: &mut tokio::signal::unix::Signal| {
                tokio::select! {
                    _ = int.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                }
            };
            let first = next(&mut int, &mut term).await;
            this.trigger(first);
            let second = next(&mut int, &mut term).await;
            eprintln!("troupe: {second} again: exiting now, without waiting for running tasks");
            std::process::exit(EXIT_CODE);
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_signal_is_kept_and_waiters_wake() {
        let i = Interrupt::default();
        assert!(!i.is_set());
        let waiter = tokio::spawn({
            let i = i.clone();
            async move { i.wait().await }
        });
        i.trigger("SIGTERM");
        i.trigger("SIGINT");
        assert_eq!(waiter.await.unwrap(), "SIGTERM");
        assert_eq!(i.signal(), Some("SIGTERM"));
        assert_eq!(i.wait().await, "SIGTERM", "already interrupted: no wait");
    }
}
