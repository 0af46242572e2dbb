//! The human reporter: a header per play and task, then one line per host result. With
//! more than a handful of hosts, results that say the same thing are folded into one
//! line (`ok: [podc001, podc002 … +98 more]`), so 100 hosts stay readable; failures are
//! always shown per host with their full diagnostic. A progress bar appears only when
//! stdout is a terminal, never in logs or pipes.
//!
//! Skipped hosts are not listed (the recap counts them) unless `--show-skipped`: a
//! phased role such as etcd-node skips most of its tasks on most hosts, and listing
//! each one buried the few lines that matter. A task whose every host skipped prints
//! nothing at all, header included.
//!
//! Every line goes out through [`escape_controls`]: what a host printed (a command's
//! stderr in an error, a debug message) could otherwise set the window title, write the
//! clipboard (OSC 52) or erase a `failed:` line and paint a fake `ok:` over it.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indexmap::IndexMap;
use indicatif::{ProgressBar, ProgressStyle};

use super::{Event, HostResult, Reporter, Stats, Status};

/// Above this many hosts in a task, equal results are folded into one line.
const FOLD_ABOVE: usize = 8;
/// Host names listed in a folded line before "+N more".
const FOLD_NAMES: usize = 5;

pub struct Human<W: Write + Send> {
    state: Mutex<State<W>>,
    diff: bool,
    show_skipped: bool,
}

struct State<W> {
    out: W,
    /// Hosts of the current task, in inventory order.
    task_hosts: Vec<String>,
    pending: Vec<HostResult>,
    /// The current task's header, printed just before its first shown line.
    header: Option<String>,
    seen: usize,
    bar: Option<ProgressBar>,
    tty: bool,
}

impl Human<std::io::Stdout> {
    pub fn stdout(diff: bool) -> Self {
        let tty = std::io::stdout().is_terminal();
        Human::with_tty(std::io::stdout(), diff, tty)
    }
}

impl<W: Write + Send> Human<W> {
    pub fn new(out: W, diff: bool) -> Self {
        Human::with_tty(out, diff, false)
    }

    fn with_tty(out: W, diff: bool, tty: bool) -> Self {
        Human {
            state: Mutex::new(State {
                out,
                task_hosts: Vec::new(),
                pending: Vec::new(),
                header: None,
                seen: 0,
                bar: None,
                tty,
            }),
            diff,
            show_skipped: false,
        }
    }

    /// List skipped hosts (and tasks every host skipped) too.
    pub fn show_skipped(mut self, show: bool) -> Self {
        self.show_skipped = show;
        self
    }

    pub fn into_inner(self) -> W {
        self.state.into_inner().unwrap_or_else(|e| e.into_inner()).out
    }
}

impl<W: Write + Send> State<W> {
    /// A line that belongs to the current task: its header goes first if still held.
    fn task_line(&mut self, text: &str) {
        if let Some(header) = self.header.take() {
            self.line(&header);
        }
        self.line(text);
    }

    fn line(&mut self, text: &str) {
        let text = &escape_controls(text);
        match &self.bar {
            Some(bar) => bar.suspend(|| {
                let _ = writeln!(self.out, "{text}");
                let _ = self.out.flush();
            }),
            None => {
                let _ = writeln!(self.out, "{text}");
            }
        }
    }

    fn folding(&self) -> bool {
        self.task_hosts.len() > FOLD_ABOVE
    }

    /// Print what was held back for folding and end the progress bar.
    fn flush_task(&mut self, diff: bool) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            self.header = None;
            let _ = self.out.flush();
            return;
        }
        let order: IndexMap<&str, usize> = self
            .task_hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.as_str(), i))
            .collect();
        // Fold by what the line would say apart from the host name.
        let mut groups: IndexMap<(Status, Option<String>, Option<String>, bool), Vec<&HostResult>> =
            IndexMap::new();
        for r in &pending {
            groups
                .entry((r.status, r.msg.clone(), r.item.clone(), r.check_mode))
                .or_default()
                .push(r);
        }
        let mut lines = Vec::new();
        for ((status, _, _, _), mut results) in groups {
            results.sort_by_key(|r| order.get(r.host.as_str()).copied().unwrap_or(usize::MAX));
            let names: Vec<&str> = results.iter().map(|r| r.host.as_str()).collect();
            let mut hosts = names
                .iter()
                .take(FOLD_NAMES)
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            if names.len() > FOLD_NAMES {
                hosts.push_str(&format!(" … +{} more", names.len() - FOLD_NAMES));
            }
            let first = results[0];
            lines.push(result_line(status, &hosts, first));
            if diff {
                for d in &first.diffs {
                    lines.push(indent(&d.diff, "    "));
                }
            }
        }
        for l in lines {
            self.task_line(&l);
        }
        self.header = None;
        let _ = self.out.flush();
    }
}

fn result_line(status: Status, hosts: &str, r: &HostResult) -> String {
    let mut line = format!("{}: [{hosts}]", status.word());
    if let Some(to) = &r.delegated_to {
        line.push_str(&format!(" -> {to}"));
    }
    if let Some(item) = &r.item {
        line.push_str(&format!(" ({item})"));
    }
    if let Some(attempts) = r.attempts {
        if attempts > 1 {
            line.push_str(&format!(" after {attempts} attempts"));
        }
    }
    if let Some(msg) = &r.msg {
        if r.check_mode {
            line.push_str(&format!(" would change: {msg}"));
        } else {
            line.push_str(&format!(" {msg}"));
        }
    }
    if r.ignored {
        line.push_str(" (failure ignored)");
    }
    line
}

/// `text` with every control character but newline and tab shown as an escape (`\e`,
/// `\r`, `\x07`, `\u{9b}`), so that nothing a host printed reaches the terminal as a
/// command. Newline and tab keep the layout; everything else prints as text.
pub fn escape_controls(text: &str) -> String {
    if !text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            '\x1b' => out.push_str("\\e"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x80 && c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn indent(text: &str, prefix: &str) -> String {
    text.trim_end_matches('\n')
        .lines()
        .map(|l| format!("{prefix}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn host_list(hosts: &[String]) -> String {
    if hosts.is_empty() {
        "(no hosts match)".to_string()
    } else if hosts.len() <= FOLD_ABOVE {
        hosts.join(", ")
    } else {
        format!("{} … ({} hosts)", hosts[..FOLD_NAMES].join(", "), hosts.len())
    }
}

pub fn recap_lines(
    hosts: &IndexMap<String, Stats>,
    elapsed: Option<Duration>,
    interrupted: bool,
) -> Vec<String> {
    let width = hosts.keys().map(|h| h.len()).max().unwrap_or(0);
    let mut lines = vec![String::new(), "RECAP".to_string()];
    let mut total = Stats::default();
    for (host, s) in hosts {
        let mut line = format!(
            "{host:<width$}  ok={:<3} changed={:<3} failed={:<3} unreachable={:<3} skipped={}",
            s.ok, s.changed, s.failed, s.unreachable, s.skipped
        );
        if s.ignored > 0 {
            line.push_str(&format!(" ignored={}", s.ignored));
        }
        lines.push(line.trim_end().to_string());
        total.ok += s.ok;
        total.changed += s.changed;
        total.failed += s.failed;
        total.unreachable += s.unreachable;
        total.skipped += s.skipped;
    }
    let failed_hosts = hosts.values().filter(|s| s.failed > 0).count();
    let unreachable_hosts = hosts.values().filter(|s| s.unreachable > 0).count();
    let verdict = if unreachable_hosts > 0 || failed_hosts > 0 {
        let mut parts = Vec::new();
        if failed_hosts > 0 {
            parts.push(format!("{failed_hosts} failed"));
        }
        if unreachable_hosts > 0 {
            parts.push(format!("{unreachable_hosts} unreachable"));
        }
        format!("FAILED ({})", parts.join(", "))
    } else {
        "OK".to_string()
    };
    // "OK" would claim a run that did not get to its end.
    let verdict = match (interrupted, verdict.as_str()) {
        (false, _) => verdict,
        (true, "OK") => "INTERRUPTED".to_string(),
        (true, _) => format!("INTERRUPTED, {verdict}"),
    };
    let mut summary = format!(
        "{verdict}: {} hosts, {} ok, {} changed, {} failed, {} unreachable, {} skipped",
        hosts.len(),
        total.ok,
        total.changed,
        total.failed,
        total.unreachable,
        total.skipped
    );
    if let Some(elapsed) = elapsed {
        summary.push_str(&format!(" in {:.1}s", elapsed.as_secs_f64()));
    }
    lines.push(summary);
    lines
}

impl<W: Write + Send> Reporter for Human<W> {
    fn event(&self, event: &Event) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::RunStart { check, .. } => {
                if *check {
                    st.line("CHECK MODE: nothing will be changed; changes are reported as `would change`");
                }
            }
            Event::PlayStart { play, hosts } => {
                st.flush_task(self.diff);
                st.line(&format!("\nPLAY [{play}] {}", host_list(hosts)));
            }
            Event::BatchStart { batch, hosts, .. } => {
                st.flush_task(self.diff);
                st.line(&format!("\nBATCH {batch}: {}", host_list(hosts)));
            }
            Event::TaskStart {
                task,
                loc,
                handler,
                hosts,
                ..
            } => {
                st.flush_task(self.diff);
                let kind = if *handler { "HANDLER" } else { "TASK" };
                st.header = Some(format!("\n{kind} [{task}] {loc}"));
                st.task_hosts = hosts.clone();
                st.seen = 0;
                if st.tty && hosts.len() > 1 {
                    let bar = ProgressBar::new(hosts.len() as u64);
                    if let Ok(style) = ProgressStyle::with_template("  {bar:30} {pos}/{len} hosts {elapsed}")
                    {
                        bar.set_style(style);
                    }
                    bar.enable_steady_tick(Duration::from_millis(200));
                    st.bar = Some(bar);
                }
            }
            Event::HostResult(r) => {
                st.seen += 1;
                if let Some(bar) = &st.bar {
                    bar.inc(1);
                }
                let show_now = !st.folding() || matches!(r.status, Status::Failed | Status::Unreachable);
                if r.status == Status::Skipped && !self.show_skipped {
                    // counted in the recap, not listed
                } else if show_now {
                    let line = result_line(r.status, &r.host, r);
                    st.task_line(&line);
                    if let Some(err) = &r.error {
                        let text = indent(&err.rendered, "    ");
                        st.task_line(&text);
                    }
                    if self.diff {
                        for d in &r.diffs {
                            let text = indent(&d.diff, "    ");
                            st.task_line(&text);
                        }
                    }
                } else {
                    st.pending.push(r.clone());
                }
                if st.seen >= st.task_hosts.len() {
                    st.flush_task(self.diff);
                }
            }
            Event::PlayAbort { play, reason } => {
                st.flush_task(self.diff);
                st.line(&format!("\nPLAY [{play}] ABORTED: {reason}"));
            }
            Event::Recap {
                hosts,
                elapsed,
                interrupted,
                signal,
            } => {
                st.flush_task(self.diff);
                if *interrupted {
                    st.line(&format!(
                        "\ninterrupted by {}: no task was started after it, and the commands running on the hosts were sent TERM",
                        signal.as_deref().unwrap_or("a signal")
                    ));
                }
                for line in recap_lines(hosts, Some(*elapsed), *interrupted) {
                    st.line(&line);
                }
                let _ = st.out.flush();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(host: &str, status: Status, msg: Option<&str>) -> HostResult {
        HostResult {
            play: "p".into(),
            task: "t".into(),
            host: host.into(),
            status,
            item: None,
            msg: msg.map(Into::into),
            diffs: vec![],
            error: None,
            check_mode: false,
            ignored: false,
            delegated_to: None,
            attempts: None,
            duration: Duration::ZERO,
        }
    }

    fn task(human: &Human<Vec<u8>>, name: &str, hosts: &[&str], statuses: &[Status]) {
        human.event(&Event::TaskStart {
            play: "p".into(),
            task: name.into(),
            loc: "site.kdl:1:1".into(),
            handler: false,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        });
        for (h, s) in hosts.iter().zip(statuses) {
            human.event(&Event::HostResult(result(h, *s, None)));
        }
    }

    #[test]
    fn skipped_hosts_and_all_skipped_tasks_are_hidden_unless_asked() {
        let hosts = ["podc01", "podc02"];
        let run = |show: bool| {
            let human = Human::new(Vec::new(), false).show_skipped(show);
            task(&human, "Only on podc01", &hosts, &[Status::Ok, Status::Skipped]);
            task(&human, "Nowhere", &hosts, &[Status::Skipped, Status::Skipped]);
            task(&human, "Everywhere", &hosts, &[Status::Changed, Status::Changed]);
            String::from_utf8(human.into_inner()).unwrap()
        };
        insta::assert_snapshot!(run(false), @r"
        TASK [Only on podc01] site.kdl:1:1
        ok: [podc01]

        TASK [Everywhere] site.kdl:1:1
        changed: [podc01]
        changed: [podc02]
        ");
        insta::assert_snapshot!(run(true), @r"
        TASK [Only on podc01] site.kdl:1:1
        ok: [podc01]
        skipped: [podc02]

        TASK [Nowhere] site.kdl:1:1
        skipped: [podc01]
        skipped: [podc02]

        TASK [Everywhere] site.kdl:1:1
        changed: [podc01]
        changed: [podc02]
        ");
    }

    #[test]
    fn control_sequences_from_hosts_are_shown_escaped() {
        let human = Human::new(Vec::new(), false);
        human.event(&Event::TaskStart {
            play: "p".into(),
            task: "Print".into(),
            loc: "site.kdl:1:1".into(),
            handler: false,
            hosts: vec!["podc01".into()],
        });
        let mut r = result("podc01", Status::Failed, None);
        r.error = Some(crate::report::ErrorInfo::plain(
            "stderr:\n\x1b]0;owned\x07\x1b[2K\rok: [podc01]\n\x1b]52;c;cm0gLXJmIH4=\x07\tend\u{9b}31m",
        ));
        human.event(&Event::HostResult(r));
        let text = String::from_utf8(human.into_inner()).unwrap();
        assert!(!text.contains(['\x1b', '\r', '\x07', '\u{9b}']), "{text:?}");
        insta::assert_snapshot!(text, @r"
        TASK [Print] site.kdl:1:1
        failed: [podc01]
            stderr:
            \e]0;owned\x07\e[2K\rok: [podc01]
            \e]52;c;cm0gLXJmIH4=\x07	end\u{9b}31m
        ");
    }

    #[test]
    fn many_hosts_fold_into_few_lines() {
        let human = Human::new(Vec::new(), false);
        let hosts: Vec<String> = (1..=100).map(|i| format!("podc{i:03}")).collect();
        human.event(&Event::TaskStart {
            play: "p".into(),
            task: "Write".into(),
            loc: "site.kdl:3:5".into(),
            handler: false,
            hosts: hosts.clone(),
        });
        for (i, h) in hosts.iter().enumerate().rev() {
            let (status, msg) = if i < 3 {
                (Status::Changed, Some("create /srv/x"))
            } else {
                (Status::Ok, None)
            };
            human.event(&Event::HostResult(result(h, status, msg)));
        }
        let text = String::from_utf8(human.into_inner()).unwrap();
        insta::assert_snapshot!(text, @r"
        TASK [Write] site.kdl:3:5
        ok: [podc004, podc005, podc006, podc007, podc008 … +92 more]
        changed: [podc001, podc002, podc003] create /srv/x
        ");
    }

    #[test]
    fn recap_counts_hosts_and_totals() {
        let mut hosts = IndexMap::new();
        hosts.insert(
            "podc01".to_string(),
            Stats {
                ok: 3,
                changed: 1,
                ..Stats::default()
            },
        );
        hosts.insert(
            "podc02".to_string(),
            Stats {
                unreachable: 1,
                ..Stats::default()
            },
        );
        let text = recap_lines(&hosts, None, false)
            .join("\n")
            .trim_start()
            .to_string();
        insta::assert_snapshot!(text, @r"
        RECAP
        podc01  ok=3   changed=1   failed=0   unreachable=0   skipped=0
        podc02  ok=0   changed=0   failed=0   unreachable=1   skipped=0
        FAILED (1 unreachable): 2 hosts, 3 ok, 1 changed, 0 failed, 1 unreachable, 0 skipped
        ");
    }
}
