//! Parse + check of a generated 10 000-task playbook, printed, not asserted (no timed
//! assertions in tests; `cargo bench -p troupe-dsl --bench parse` is the measurement).
//! Run with `cargo test --release -p troupe-dsl --test it perf -- --ignored --nocapture`.

use std::fmt::Write;

use crate::registry::MODULES;

pub fn big_playbook(tasks: usize) -> String {
    let mut s = String::from("play \"big\" hosts=all {\n    vars { base \"/srv\" }\n");
    for i in 0..tasks {
        match i % 4 {
            0 => writeln!(s, "    task \"dir {i}\" {{ file \"{{{{ base }}}}/d{i}\" state=directory mode=0o755 }}"),
            1 => writeln!(s, "    task \"file {i}\" when=\"x is defined and x > {i}\" {{ copy content=\"line {i}\" dest=\"/srv/f{i}\" }}"),
            2 => writeln!(s, "    task \"tpl {i}\" register=\"r{i}\" {{ template src=\"t.j2\" dest=\"/srv/t{i}\" }}"),
            _ => writeln!(s, "    task \"cmd {i}\" loop=\"range(3)\" {{ command \"echo {{{{ item }}}}\" creates=\"/srv/c{i}\" }}"),
        }
        .unwrap();
    }
    s.push_str("}\n");
    s
}

#[test]
#[ignore]
fn ten_thousand_tasks() {
    let text = big_playbook(10_000);
    let opts = troupe_dsl::LoadOptions::default();
    for _ in 0..3 {
        let start = std::time::Instant::now();
        let pb = troupe_dsl::parse_playbook_str(&text, "big.kdl", MODULES, &opts).unwrap();
        let took = start.elapsed();
        assert_eq!(pb.plays[0].tasks.len(), 10_000);
        let start = std::time::Instant::now();
        assert!(troupe_dsl::__fast_parse(&text));
        let parse = start.elapsed();
        println!(
            "parse + check of 10 000 tasks ({} KiB): {took:?} (stage one alone: {parse:?})",
            text.len() / 1024
        );
    }
}

#[test]
#[ignore]
fn ten_thousand_tasks_kdl_only() {
    for n in [1_000, 2_000, 4_000, 10_000] {
        let text = big_playbook(n);
        let start = std::time::Instant::now();
        let doc = kdl::KdlDocument::parse(&text).unwrap();
        println!(
            "kdl parse only, {n} tasks: {:?} ({} nodes)",
            start.elapsed(),
            doc.nodes().len()
        );
        let flat: String = text
            .lines()
            .skip(2)
            .filter(|l| l.starts_with("    task"))
            .map(|l| format!("{l}\n"))
            .collect();
        let start = std::time::Instant::now();
        let doc = kdl::KdlDocument::parse(&flat).unwrap();
        println!(
            "  flat (top-level tasks): {:?} ({} nodes)",
            start.elapsed(),
            doc.nodes().len()
        );
    }
    let env = minijinja::Environment::new();
    let start = std::time::Instant::now();
    for i in 0..10_000 {
        let _ = env.compile_expression_owned(format!("x is defined and x > {i}"));
    }
    println!("10k expressions: {:?}", start.elapsed());
    let mut env = minijinja::Environment::new();
    let start = std::time::Instant::now();
    for i in 0..10_000 {
        let _ = env.add_template_owned("<check>", format!("{{{{ base }}}}/d{i}"));
        env.remove_template("<check>");
    }
    println!("10k templates: {:?}", start.elapsed());
}
