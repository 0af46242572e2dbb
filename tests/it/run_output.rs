//! Output of users' commands on the controller (issue 11.5): 50 MB of stdout on each
//! of 3 hosts took 960 MB; only the tail of each stream is kept now, with counts of
//! what was dropped.

use serde_json::Value;
use troupe_tests::Lab;

use crate::run_util::{playbook, run};

/// Regression (issue 11.5): a command printing 50 MB registers the last 512 KiB of it
/// (from a line start), and the registered result says how many bytes and lines were
/// left out; the numbers add up to what the command printed.
#[test]
fn a_command_printing_50_mb_registers_its_tail_and_what_was_dropped() {
    let lab = Lab::shared();
    const N: u64 = 6_500_000;
    let report = "{{ out.stdout | length }} {{ out.stdout_lines | length }} {{ out.stdout_lines | first }} \
                  {{ out.stdout_lines | last }} {{ out.stdout_dropped_bytes }} {{ out.stdout_dropped_lines }}";
    let pb = playbook(&format!(
        r#"play "Loud" hosts=all {{
    task "Print" register="out" {{ shell "seq 1 {N}" }}
    task "Report" {{ debug "{report}" }}
}}"#
    ));
    let out = run(lab, &pb.path, &lab.inventory_path(), &["--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.show());
    let total: u64 = (1..=N).map(|n| n.to_string().len() as u64 + 1).sum();
    assert!(total > 50_000_000);
    let reports: Vec<Value> = out.results("Report");
    assert_eq!(reports.len(), 3, "{}", out.show());
    for r in reports {
        let msg = r["msg"].as_str().unwrap_or_else(|| panic!("{r}"));
        let f: Vec<u64> = msg
            .split_whitespace()
            .map(|x| x.parse().unwrap_or_else(|_| panic!("{msg}")))
            .collect();
        let [len, lines, first, last, dropped_bytes, dropped_lines] = f[..] else {
            panic!("{msg}")
        };
        let tail = troupe_run::connection::OUTPUT_TAIL as u64;
        assert!(len <= tail && len > tail - 4096, "{msg}");
        assert_eq!(last, N, "the tail is the end of the output: {msg}");
        assert_eq!(first, dropped_lines + 1, "whole lines dropped, counted: {msg}");
        assert_eq!(lines, N - dropped_lines, "{msg}");
        // The registered stdout has its final newline trimmed.
        assert_eq!(dropped_bytes + len + 1, total, "{msg}");
    }
}
