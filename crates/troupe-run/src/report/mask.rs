//! Secret masking at the reporter boundary. Values of variables marked `(secret)` and
//! what `no-log` tasks register can reach output by many roads: a diff of a rendered
//! template, a command line quoted in an error, a program's stderr, a debug message.
//! Rather than trust every module and error path to hide them, the engine collects the
//! secret strings as it learns them (per host, when a task's vars are resolved) into one
//! [`Masker`], and [`Masking`] rewrites every string of every [`Event`] before any
//! reporter (human or JSON) sees it.
//!
//! Strings shorter than [`MIN_SECRET_LEN`] are not masked: replacing every `on` or `1`
//! in the output would make it unreadable while protecting nothing worth protecting.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::{ErrorInfo, Event, HostResult, Reporter};

/// What a secret is replaced with.
pub const MASK: &str = "********";
/// Secrets shorter than this (in bytes) are not masked.
pub const MIN_SECRET_LEN: usize = 4;

/// The set of secret strings known so far; shared by the executor (which adds) and the
/// [`Masking`] reporter (which replaces).
#[derive(Debug, Default)]
pub struct Masker {
    /// Longest first, so a secret that contains another is masked whole.
    secrets: RwLock<Vec<String>>,
}

impl Masker {
    pub fn new() -> Masker {
        Masker::default()
    }

    /// Adds one secret string. Each of its lines is added too, so that a multi-line
    /// secret (a key, a certificate) stays hidden in a line-based diff.
    pub fn add(&self, secret: &str) {
        let mut new: BTreeSet<&str> = BTreeSet::new();
        for s in std::iter::once(secret).chain(secret.lines()) {
            let s = s.trim_end_matches('\r');
            if s.len() >= MIN_SECRET_LEN {
                new.insert(s);
            }
        }
        if new.is_empty() {
            return;
        }
        {
            let known = self.secrets.read().unwrap_or_else(|e| e.into_inner());
            if new.iter().all(|s| known.iter().any(|k| k == s)) {
                return;
            }
        }
        let mut known = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        for s in new {
            if !known.iter().any(|k| k == s) {
                known.push(s.to_string());
            }
        }
        known.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    }

    /// Adds every string (and number) inside a JSON value.
    pub fn add_value(&self, value: &Value) {
        match value {
            Value::String(s) => self.add(s),
            Value::Number(n) => self.add(&n.to_string()),
            Value::Array(items) => items.iter().for_each(|v| self.add_value(v)),
            Value::Object(map) => map.values().for_each(|v| self.add_value(v)),
            Value::Null | Value::Bool(_) => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.read().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// `text` with every known secret replaced by [`MASK`].
    pub fn mask(&self, text: &str) -> String {
        let known = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        let mut out = text.to_string();
        for s in known.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        out
    }

    fn mask_in_place(&self, text: &mut String) {
        let masked = self.mask(text);
        if masked != *text {
            *text = masked;
        }
    }

    fn mask_error(&self, e: &mut ErrorInfo) {
        self.mask_in_place(&mut e.message);
        self.mask_in_place(&mut e.rendered);
        if let Some(h) = &mut e.help {
            self.mask_in_place(h);
        }
        if let Some(c) = &mut e.code {
            self.mask_in_place(c);
        }
    }

    fn mask_result(&self, r: &mut HostResult) {
        for s in [&mut r.play, &mut r.task, &mut r.host] {
            self.mask_in_place(s);
        }
        for s in [&mut r.item, &mut r.msg, &mut r.delegated_to]
            .into_iter()
            .flatten()
        {
            self.mask_in_place(s);
        }
        for d in &mut r.diffs {
            self.mask_in_place(&mut d.path);
            self.mask_in_place(&mut d.diff);
        }
        if let Some(e) = &mut r.error {
            self.mask_error(e);
        }
    }

    /// A copy of `event` with every secret in every string replaced.
    pub fn mask_event(&self, event: &Event) -> Event {
        let mut event = event.clone();
        if self.is_empty() {
            return event;
        }
        match &mut event {
            Event::RunStart { playbook, .. } => self.mask_in_place(playbook),
            Event::PlayStart { play, hosts } => {
                self.mask_in_place(play);
                hosts.iter_mut().for_each(|h| self.mask_in_place(h));
            }
            Event::BatchStart { play, hosts, .. } => {
                self.mask_in_place(play);
                hosts.iter_mut().for_each(|h| self.mask_in_place(h));
            }
            Event::TaskStart {
                play,
                task,
                loc,
                hosts,
                ..
            } => {
                for s in [play, task, loc] {
                    self.mask_in_place(s);
                }
                hosts.iter_mut().for_each(|h| self.mask_in_place(h));
            }
            Event::HostResult(r) => self.mask_result(r),
            Event::PlayAbort { play, reason } => {
                self.mask_in_place(play);
                self.mask_in_place(reason);
            }
            Event::Recap { .. } => {}
        }
        event
    }
}

/// A reporter that masks every event with a [`Masker`] before passing it on.
pub struct Masking {
    inner: Arc<dyn Reporter>,
    masker: Arc<Masker>,
}

impl Masking {
    pub fn new(inner: Arc<dyn Reporter>, masker: Arc<Masker>) -> Masking {
        Masking { inner, masker }
    }
}

impl Reporter for Masking {
    fn event(&self, event: &Event) {
        self.inner.event(&self.masker.mask_event(event));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{DiffInfo, Recorder, Status};
    use serde_json::json;
    use std::time::Duration;

    fn result() -> HostResult {
        HostResult {
            play: "p".into(),
            task: "t".into(),
            host: "podc01".into(),
            status: Status::Failed,
            item: Some("s3cr3t-token".into()),
            msg: Some("login --password s3cr3t-token".into()),
            diffs: vec![DiffInfo {
                path: "/etc/token".into(),
                diff: "-old\n+token=s3cr3t-token\n".into(),
            }],
            error: Some(ErrorInfo {
                message: "exit 1: bad s3cr3t-token".into(),
                code: Some("troupe::command".into()),
                help: Some("check s3cr3t-token".into()),
                rendered: "× exit 1: bad s3cr3t-token".into(),
            }),
            check_mode: false,
            ignored: false,
            delegated_to: None,
            attempts: None,
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn masks_every_string_of_a_result() {
        let m = Masker::new();
        m.add("s3cr3t-token");
        let Event::HostResult(r) = m.mask_event(&Event::HostResult(result())) else {
            unreachable!()
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("s3cr3t"), "{json}");
        assert!(!r.error.as_ref().unwrap().rendered.contains("s3cr3t"));
        assert_eq!(r.msg.as_deref(), Some("login --password ********"));
        assert_eq!(r.diffs[0].diff, "-old\n+token=********\n");
        assert_eq!(r.item.as_deref(), Some("********"));
    }

    #[test]
    fn short_values_are_not_secrets_and_nothing_known_changes_nothing() {
        let m = Masker::new();
        assert_eq!(m.mask("abc on 1"), "abc on 1");
        m.add("abc");
        m.add("");
        assert!(m.is_empty());
        assert_eq!(m.mask("abc"), "abc");
        m.add("abcd");
        assert_eq!(m.mask("xabcdx abc"), "x********x abc");
    }

    #[test]
    fn longest_secret_wins_and_multiline_secrets_mask_line_by_line() {
        let m = Masker::new();
        m.add("pass");
        m.add("password123");
        assert_eq!(m.mask("password123 pass"), "******** ********");
        m.add("-----BEGIN KEY-----\nAAAABBBBCCCC\n-----END KEY-----\n");
        assert_eq!(m.mask("+AAAABBBBCCCC"), "+********");
    }

    #[test]
    fn values_inside_lists_maps_and_numbers_are_added() {
        let m = Masker::new();
        m.add_value(&json!({"user": "admin-user", "keys": ["key-one", 12345678], "on": true}));
        assert_eq!(
            m.mask("admin-user key-one 12345678 true"),
            "******** ******** ******** true"
        );
    }

    #[test]
    fn masking_reporter_masks_before_the_inner_reporter_sees_anything() {
        let rec = Arc::new(Recorder::default());
        let m = Arc::new(Masker::new());
        let r = Masking::new(rec.clone(), m.clone());
        m.add("s3cr3t-token");
        r.event(&Event::HostResult(result()));
        r.event(&Event::PlayAbort {
            play: "p".into(),
            reason: "because s3cr3t-token".into(),
        });
        let events = rec.0.lock().unwrap();
        let text = format!("{events:?}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert_eq!(events.len(), 2);
    }
}
