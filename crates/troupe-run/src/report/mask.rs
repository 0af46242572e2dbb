//! Secret masking at the reporter boundary. Values of variables marked `(secret)` and
//! what `no-log` tasks register can reach output by many roads: a diff of a rendered
//! template, a command line quoted in an error, a program's stderr, a debug message.
//! Rather than trust every module and error path to hide them, the engine collects the
//! secret strings as it learns them (per host, when a task's vars are resolved) into one
//! [`Masker`], and [`Masking`] rewrites every string of every [`Event`] before any
//! reporter (human or JSON) sees it.
//!
//! A secret is not always printed as written, so each one is known in the forms output
//! gives it: shell-quoted (`'it'\''s'` in a command summary), JSON- and Rust-escaped
//! (`dq\"s\\2` in a `debug` of a registered result), and cut (`one_line` keeps the first
//! 100 characters of a command and adds `…`): a prefix of six characters or more of any
//! form, right before `…` or a line's end, is masked too. Wrapping is the one transform
//! that cannot be undone afterwards, so errors are masked *before* miette renders (and
//! wraps) them: [`MaskedDiagnostic`] is a masked copy of a diagnostic, source snippet
//! included (masked byte for byte, so its spans stay right).
//!
//! Strings shorter than [`MIN_SECRET_LEN`] are not masked: replacing every `on` or `1`
//! in the output would make it unreadable while protecting nothing worth protecting.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, RwLock};

use miette::{Diagnostic, LabeledSpan, Severity, SourceCode, SourceSpan};
use serde_json::Value;

use super::{ErrorInfo, Event, HostResult, Reporter};

/// What a secret is replaced with.
pub const MASK: &str = "********";
/// Secrets shorter than this (in bytes) are not masked.
pub const MIN_SECRET_LEN: usize = 4;
/// A secret cut short (before `…` or a line's end) is masked when at least this many of
/// its characters are shown.
pub const MIN_CUT_LEN: usize = 6;

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

    /// Adds one secret string, in every form output can give it ([`forms`]). Each of its
    /// lines is added too, so that a multi-line secret (a key, a certificate) stays
    /// hidden in a line-based diff.
    pub fn add(&self, secret: &str) {
        let mut new: BTreeSet<String> = BTreeSet::new();
        for s in std::iter::once(secret).chain(secret.lines()) {
            let s = s.trim_end_matches('\r');
            if s.len() >= MIN_SECRET_LEN {
                new.extend(forms(s));
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
            if !known.iter().any(|k| *k == s) {
                known.push(s);
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

    /// `text` with every known secret (in any of its forms, whole or cut) replaced by
    /// [`MASK`].
    pub fn mask(&self, text: &str) -> String {
        let known = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        if known.is_empty() {
            return text.to_string();
        }
        let mut out = text.to_string();
        for s in known.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        mask_cut(&out, &known)
    }

    /// `text` with every known secret (whole, in any form) overwritten by as many `*`
    /// bytes: for a source snippet, whose label spans are byte offsets into it.
    pub fn mask_same_len(&self, text: &[u8]) -> Vec<u8> {
        let known = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        let mut out = text.to_vec();
        for s in known.iter() {
            let s = s.as_bytes();
            let mut i = 0;
            while i + s.len() <= out.len() {
                if out[i..].starts_with(s) {
                    out[i..i + s.len()].fill(b'*');
                    i += s.len();
                } else {
                    i += 1;
                }
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

/// The forms a secret takes in output: as written, shell-quoted (as
/// [`crate::connection::shell::quote`] writes it, without the outer quotes, which
/// surround more than the secret when it is part of a word), JSON-escaped (once and twice,
/// for a JSON string inside a JSON string) and Rust-escaped (`{:?}`).
fn forms(secret: &str) -> Vec<String> {
    let json = |s: &str| {
        let q = serde_json::to_string(s).unwrap_or_default();
        q[1..q.len() - 1].to_string()
    };
    let debug = |s: &str| {
        let q = format!("{s:?}");
        q[1..q.len() - 1].to_string()
    };
    let shell = secret.replace('\'', r"'\''");
    let once = json(secret);
    let twice = json(&once);
    let mut out = vec![secret.to_string(), shell, debug(secret), once, twice];
    out.sort();
    out.dedup();
    out.retain(|f| f.len() >= MIN_SECRET_LEN);
    out
}

/// `text` with what is left of a cut secret masked: a prefix of [`MIN_CUT_LEN`]
/// characters or more of a known form, right before `…` or a line's end (or the end).
fn mask_cut(text: &str, known: &[String]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let cut = rest.find(['…', '\n']).unwrap_or(rest.len());
        let (before, after) = rest.split_at(cut);
        out.push_str(&mask_cut_tail(before, known));
        let Some(c) = after.chars().next() else {
            break;
        };
        out.push(c);
        rest = &after[c.len_utf8()..];
    }
    out
}

/// `segment` with its longest tail that is a proper prefix of a known form (of at
/// least [`MIN_CUT_LEN`] characters) replaced by [`MASK`].
fn mask_cut_tail(segment: &str, known: &[String]) -> String {
    let mut best = 0;
    for form in known {
        // proper prefixes, by characters, longest first
        let ends: Vec<usize> = form.char_indices().map(|(i, _)| i).skip(MIN_CUT_LEN).collect();
        if let Some(&end) = ends
            .iter()
            .rev()
            .find(|&&end| end > best && segment.ends_with(&form[..end]))
        {
            best = end;
        }
    }
    if best == 0 {
        return segment.to_string();
    }
    format!("{}{MASK}", &segment[..segment.len() - best])
}

/// A masked, owned copy of a diagnostic, for miette to render: its message, code, help,
/// labels, causes and related diagnostics with every secret replaced, and its source
/// snippet with every secret overwritten byte for byte. Rendering this instead of the
/// original means nothing wraps or cuts a secret before it is masked.
pub struct MaskedDiagnostic {
    text: String,
    code: Option<String>,
    help: Option<String>,
    url: Option<String>,
    severity: Option<Severity>,
    labels: Vec<LabeledSpan>,
    source: Option<Box<dyn SourceCode>>,
    cause: Option<Box<MaskedDiagnostic>>,
    related: Vec<MaskedDiagnostic>,
}

impl MaskedDiagnostic {
    pub fn new(diag: &dyn Diagnostic, masker: &Masker) -> MaskedDiagnostic {
        let cause = match diag.diagnostic_source() {
            Some(d) => Some(MaskedDiagnostic::new(d, masker)),
            None => diag.source().map(|e| MaskedDiagnostic::from_error(e, masker)),
        };
        MaskedDiagnostic {
            text: masker.mask(&diag.to_string()),
            code: diag.code().map(|c| masker.mask(&c.to_string())),
            help: diag.help().map(|h| masker.mask(&h.to_string())),
            url: diag.url().map(|u| masker.mask(&u.to_string())),
            severity: diag.severity(),
            labels: diag
                .labels()
                .into_iter()
                .flatten()
                .map(|l| {
                    let label = l.label().map(|t| masker.mask(t));
                    if l.primary() {
                        LabeledSpan::new_primary_with_span(label, *l.inner())
                    } else {
                        LabeledSpan::new_with_span(label, *l.inner())
                    }
                })
                .collect(),
            source: diag.source_code().and_then(|s| masked_source(s, masker)),
            cause: cause.map(Box::new),
            related: diag
                .related()
                .into_iter()
                .flatten()
                .map(|d| MaskedDiagnostic::new(d, masker))
                .collect(),
        }
    }

    fn from_error(e: &(dyn std::error::Error + 'static), masker: &Masker) -> MaskedDiagnostic {
        MaskedDiagnostic {
            text: masker.mask(&e.to_string()),
            code: None,
            help: None,
            url: None,
            severity: None,
            labels: Vec::new(),
            source: None,
            cause: e
                .source()
                .map(|e| Box::new(MaskedDiagnostic::from_error(e, masker))),
            related: Vec::new(),
        }
    }
}

/// The whole of `source`, masked byte for byte, with its name and language.
fn masked_source(source: &dyn SourceCode, masker: &Masker) -> Option<Box<dyn SourceCode>> {
    let all = source
        .read_span(&SourceSpan::new(0.into(), 0), 0, usize::MAX)
        .ok()?;
    if all.span().offset() != 0 {
        return None;
    }
    let data = masker.mask_same_len(all.data());
    Some(match all.name() {
        Some(name) => {
            let named = miette::NamedSource::new(name, data);
            match all.language() {
                Some(lang) => Box::new(named.with_language(lang)),
                None => Box::new(named),
            }
        }
        None => Box::new(data),
    })
}

impl fmt::Display for MaskedDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for MaskedDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaskedDiagnostic")
            .field("text", &self.text)
            .finish_non_exhaustive()
    }
}

impl std::error::Error for MaskedDiagnostic {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

impl Diagnostic for MaskedDiagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.code.as_ref().map(|c| Box::new(c) as Box<dyn fmt::Display>)
    }

    fn severity(&self) -> Option<Severity> {
        self.severity
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|c| Box::new(c) as Box<dyn fmt::Display>)
    }

    fn url<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.url.as_ref().map(|c| Box::new(c) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_deref()
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            None
        } else {
            Some(Box::new(self.labels.iter().cloned()))
        }
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        if self.related.is_empty() {
            None
        } else {
            Some(Box::new(self.related.iter().map(|d| d as &dyn Diagnostic)))
        }
    }

    fn diagnostic_source(&self) -> Option<&dyn Diagnostic> {
        self.cause.as_deref().map(|c| c as &dyn Diagnostic)
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

    /// A 180-character secret in a message miette wraps at 100 columns: no piece of it
    /// is left in the rendered error (masking after rendering found none of it whole).
    #[test]
    fn long_secrets_are_masked_before_the_error_is_wrapped() {
        let secret: String = (0..18).map(|i| format!("tok{i:02}-abcd")).collect();
        assert_eq!(secret.len(), 180);
        let m = Masker::new();
        m.add(&secret);
        let diag = miette::MietteDiagnostic::new(format!(
            "command `curl --header {secret} https://127.0.0.1/api` timed out after 5s"
        ))
        .with_help(format!("the token was {secret}"));
        let info = ErrorInfo::from_diagnostic(&diag, &m);
        for piece in secret.as_bytes().chunks(6) {
            let piece = std::str::from_utf8(piece).unwrap();
            assert!(
                !info.rendered.contains(piece),
                "{piece} shown:\n{}",
                info.rendered
            );
        }
        assert_eq!(
            info.message,
            "command `curl --header ******** https://127.0.0.1/api` timed out after 5s"
        );
        insta::assert_snapshot!(info.rendered, @r"
        × command `curl --header ******** https://127.0.0.1/api` timed out after 5s
        help: the token was ********
        ");
    }

    #[test]
    fn quoted_escaped_and_cut_forms_are_masked() {
        let m = Masker::new();
        m.add("it's-Secret1");
        m.add("dq\"Secret\\2");
        let quoted = crate::connection::shell::quote_argv(&["login", "--pw", "it's-Secret1"]);
        assert_eq!(quoted, r"login --pw 'it'\''s-Secret1'");
        assert_eq!(m.mask(&quoted), "login --pw '********'");
        let json = serde_json::to_string(&json!({"stdout": "dq\"Secret\\2"})).unwrap();
        assert_eq!(json, r#"{"stdout":"dq\"Secret\\2"}"#);
        assert_eq!(m.mask(&json), r#"{"stdout":"********"}"#);
        let twice = serde_json::to_string(&json).unwrap();
        assert!(!m.mask(&twice).contains("Secret"), "{}", m.mask(&twice));
        assert_eq!(m.mask(&format!("{:?}", "dq\"Secret\\2")), "\"********\"");

        // what `one_line` leaves of a long command line
        let line = format!("run: {}{}", "x".repeat(88), "it's-Secret1 --flag");
        let cut = crate::modules::command::one_line(&line, 100);
        assert!(cut.ends_with("it's-Se…"), "{cut}");
        assert!(m.mask(&cut).ends_with("x********…"), "{}", m.mask(&cut));
        // at a line's end, and in a quoted form
        assert_eq!(m.mask("tail 'it'\\''s-Se\nnext"), "tail '********\nnext");
        assert_eq!(m.mask("it's-Se"), "********");
        // five characters of a secret say too little to be masked, and are not
        assert_eq!(m.mask("it's-…"), "it's-…");
        assert_eq!(m.mask("it's-Se and more"), "it's-Se and more");
    }

    #[test]
    fn source_snippets_are_masked_byte_for_byte() {
        let m = Masker::new();
        m.add("hunter2-pw");
        let src = "host \"podc01\" {\n    vars { (secret)pw \"hunter2-pw\"; port \"x\" }\n}\n";
        let at = src.find("\"x\"").unwrap();
        let diag = miette::MietteDiagnostic::new("`port` must be an integer")
            .with_label(miette::LabeledSpan::at(at..at + 3, "a string"));
        let report = miette::Report::new(diag)
            .with_source_code(miette::NamedSource::new("inventory.kdl", src.to_string()));
        let info = ErrorInfo::from_diagnostic(report.as_ref(), &m);
        assert!(!info.rendered.contains("hunter2"), "{}", info.rendered);
        insta::assert_snapshot!(info.rendered, @r#"
         × `port` must be an integer
          ╭─[inventory.kdl:2:42]
        1 │ host "podc01" {
        2 │     vars { (secret)pw "**********"; port "x" }
          ·                                          ─┬─
          ·                                           ╰── a string
        3 │ }
          ╰────
        "#);
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
