//! Reporting, apart from execution: the scheduler and executor emit one stream of
//! [`Event`]s and never print. The human reporter turns them into progress lines and a
//! recap, the JSON reporter into one object per line; both see the same facts, already
//! masked for `no-log`, so no output path can leak what another one hides. Secret
//! values (vars marked `(secret)`, what `no-log` tasks register) are masked by
//! [`mask::Masking`], which the scheduler puts in front of every reporter.

pub mod human;
pub mod json;
pub mod mask;

use std::time::Duration;

use indexmap::IndexMap;
use serde::Serialize;

/// How a task ended on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Changed,
    Failed,
    Skipped,
    Unreachable,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Changed => "changed",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Unreachable => "unreachable",
        }
    }
}

/// An error as a user sees it: what happened, where, and what to do.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorInfo {
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// The full rendered diagnostic (source snippets of templates included), for humans.
    #[serde(skip)]
    pub rendered: String,
}

impl ErrorInfo {
    /// The error as the user will see it, secrets masked by `masker` first: rendering
    /// wraps long lines at 100 columns, and a secret split over two lines could no longer
    /// be found by the [`mask::Masking`] reporter.
    pub fn from_diagnostic(diag: &dyn miette::Diagnostic, masker: &mask::Masker) -> Self {
        let diag = mask::MaskedDiagnostic::new(diag, masker);
        let mut rendered = String::new();
        let handler = miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
            .with_width(100);
        if handler.render_report(&mut rendered, &diag).is_err() {
            rendered = diag.to_string();
        }
        ErrorInfo {
            message: diag.to_string(),
            code: miette::Diagnostic::code(&diag).map(|c| c.to_string()),
            help: miette::Diagnostic::help(&diag).map(|h| h.to_string()),
            rendered,
        }
    }

    pub fn plain(message: impl Into<String>) -> Self {
        let message = message.into();
        ErrorInfo {
            rendered: message.clone(),
            message,
            code: None,
            help: None,
        }
    }

    /// What `no-log` leaves of an error.
    pub fn masked() -> Self {
        ErrorInfo::plain("the output has been hidden due to the task's `no-log`")
    }
}

/// A file change as shown by `--diff`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DiffInfo {
    pub path: String,
    /// Unified diff text.
    pub diff: String,
}

/// Counters per host for the recap.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    pub ok: u32,
    pub changed: u32,
    pub failed: u32,
    pub unreachable: u32,
    pub skipped: u32,
    /// Failures let through by `ignore-errors`.
    pub ignored: u32,
}

impl Stats {
    pub fn count(&mut self, status: Status, ignored: bool) {
        match status {
            Status::Ok => self.ok += 1,
            Status::Changed => self.changed += 1,
            Status::Failed if ignored => self.ignored += 1,
            Status::Failed => self.failed += 1,
            Status::Skipped => self.skipped += 1,
            Status::Unreachable => self.unreachable += 1,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStart {
        playbook: String,
        check: bool,
    },
    PlayStart {
        play: String,
        hosts: Vec<String>,
    },
    /// A serial batch begins (only emitted for plays with `serial`).
    BatchStart {
        play: String,
        batch: usize,
        hosts: Vec<String>,
    },
    TaskStart {
        play: String,
        task: String,
        /// `file:line:column` of the task in the playbook.
        loc: String,
        handler: bool,
        hosts: Vec<String>,
    },
    HostResult(HostResult),
    /// A play stopped early (max-fail-percent, every host failed).
    PlayAbort {
        play: String,
        reason: String,
    },
    Recap {
        hosts: IndexMap<String, Stats>,
        #[serde(skip)]
        elapsed: Duration,
        /// The run was stopped by a signal: later tasks did not run, and the counts
        /// cover only what did. In JSON only when true.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        interrupted: bool,
        /// Which signal (`SIGINT`, `SIGTERM`), when interrupted.
        #[serde(skip_serializing_if = "Option::is_none")]
        signal: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct HostResult {
    pub play: String,
    pub task: String,
    pub host: String,
    pub status: Status,
    /// The loop item, shown compactly (masked with `no-log`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// "create /etc/x", "would change: ...", a debug message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diffs: Vec<DiffInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// In `--check`, a change that would have been made.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub check_mode: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ignored: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegated_to: Option<String>,
    /// Attempts made when `retries`/`until` was used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Wall time of the task on this host (`duration_ms` in JSON).
    #[serde(rename = "duration_ms", serialize_with = "as_millis")]
    pub duration: Duration,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// Where events go. Called from many tasks at once: implementations lock inside.
pub trait Reporter: Send + Sync {
    fn event(&self, event: &Event);
}

/// The output format chosen with `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Human,
    Json,
}

/// A reporter writing to stdout in the chosen format.
pub fn stdout_reporter(format: OutputFormat, diff: bool, show_skipped: bool) -> Box<dyn Reporter> {
    match format {
        OutputFormat::Human => Box::new(human::Human::stdout(diff).show_skipped(show_skipped)),
        OutputFormat::Json => Box::new(json::Json::new(std::io::stdout())),
    }
}

/// `file:line:column` of a playbook location, the file relative to the working
/// directory when it is below it (shorter, and stable in test snapshots).
pub fn show_loc(loc: &troupe_dsl::model::Loc) -> String {
    let file = loc.file.as_path();
    let shown = std::env::current_dir()
        .ok()
        .and_then(|cwd| file.strip_prefix(&cwd).ok().map(|p| p.to_path_buf()))
        .unwrap_or_else(|| file.to_path_buf());
    format!("{}:{}:{}", shown.display(), loc.line, loc.column)
}

/// Unified diff of before/after text, `path` in the headers. The body of a PEM
/// private key on either side is never shown (one line with its size and a short hash
/// stands in, so the diff still tells whether it changed).
pub fn unified_diff(path: &str, before: &str, after: &str) -> String {
    use crate::pki::guard::redact_private_keys;
    let (before, after) = (redact_private_keys(before), redact_private_keys(after));
    similar::TextDiff::from_lines(before.as_ref(), after.as_ref())
        .unified_diff()
        .context_radius(3)
        .header(&format!("{path} (before)"), &format!("{path} (after)"))
        .to_string()
}

/// Keeps every event, for tests (not compiled into the binary).
#[cfg(test)]
#[derive(Default)]
pub struct Recorder(pub std::sync::Mutex<Vec<Event>>);

#[cfg(test)]
impl Reporter for Recorder {
    fn event(&self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

#[cfg(test)]
impl Recorder {
    pub fn results(&self) -> Vec<HostResult> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::HostResult(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }
}
