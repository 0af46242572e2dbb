//! Bad input never crashes and never reaches a host (issue 11, items 7 to 11): files that
//! are not UTF-8, nesting deep enough to overflow a recursive parser, NUL bytes in paths
//! and arguments, templates that never end, and templates or filters that do not exist.
//! Each is refused with a located diagnostic and the exit code of a check error, and
//! `run` leaves the hosts as they were.

use troupe_tests::Lab;

use crate::run_util::{Run, lab_inventory, playbook, troupe};

/// The exit code of a playbook that does not check (`scheduler::exit::FAILED`).
const CHECK_ERROR: i32 = 1;

fn check(lab: &Lab, pb: &std::path::Path) -> Run {
    let inv = lab_inventory(lab);
    troupe(lab, &["check", pb.to_str().unwrap(), "-i", inv.to_str().unwrap()])
}

#[test]
fn a_playbook_that_is_not_utf8_names_line_and_column() {
    let lab = Lab::shared();
    let pb = playbook("");
    std::fs::write(
        &pb.path,
        b"play \"x\" hosts=all {\n    task \"t\" { debug msg=\"na\xefve\" }\n}\n",
    )
    .unwrap();
    let out = check(lab, &pb.path);
    assert_eq!(out.code, CHECK_ERROR, "{}", out.show());
    assert!(out.stderr.contains("troupe::dsl::not_utf8"), "{}", out.show());
    assert!(
        out.stderr.contains("is not UTF-8: byte 0xef at line 2,"),
        "{}",
        out.show()
    );
    assert!(
        out.stderr.contains("play.kdl:2:29]"),
        "the snippet points at it: {}",
        out.show()
    );
    assert!(!out.stderr.contains("stream did not contain"), "{}", out.show());
}

#[test]
fn three_thousand_nested_braces_are_a_located_check_error_not_a_crash() {
    let lab = Lab::shared();
    let mut text =
        String::from("play \"x\" hosts=all {\n    task \"t\" { debug msg=\"{{ '{' }}\" }\n    vars { a ");
    text.push_str(&"{ b ".repeat(3000));
    text.push_str(&"}".repeat(3000));
    text.push_str(" }\n}\n");
    let pb = playbook(&text);
    let out = check(lab, &pb.path);
    assert_eq!(out.code, CHECK_ERROR, "{}", out.show());
    assert!(out.stderr.contains("troupe::dsl::too_deep"), "{}", out.show());
    assert!(out.stderr.contains("nest more than 64 deep"), "{}", out.show());
    // the 65th `{`: the play's, the vars', then the 63rd `{ b ` of line 3
    let column = "    vars { a ".len() + 62 * "{ b ".len() + 1;
    assert!(
        out.stderr.contains(&format!("play.kdl:3:{column}]")),
        "located at the brace that goes too deep: {}",
        out.show()
    );
    // `run` does the same check first
    let inv = lab_inventory(lab);
    let out = crate::run_util::run(lab, &pb.path, &inv, &[]);
    assert_eq!(out.code, CHECK_ERROR, "{}", out.show());
    assert!(out.stderr.contains("troupe::dsl::too_deep"), "{}", out.show());
}

#[test]
fn a_block_comment_full_of_stars_and_nested_comments_parses() {
    let lab = Lab::shared();
    // each `*`, `/` and nested comment was a stack frame of kdl's parser: this aborted
    let text = format!(
        "/* {} {} x {} */\nplay \"x\" hosts=all {{\n    task \"t\" {{ debug msg=\"hi\" }}\n}}\n",
        "* / ".repeat(20000),
        "/*".repeat(5000),
        "*/".repeat(5000),
    );
    let pb = playbook(&text);
    let out = check(lab, &pb.path);
    assert_eq!(out.code, 0, "{}", out.show());
    assert!(out.stdout.contains("ok (1 plays, 1 tasks"), "{}", out.show());
}

#[test]
fn a_template_that_never_ends_fails_its_task_naming_template_and_line() {
    let lab = Lab::shared();
    let dir = lab.scratch("bad_input_fuel");
    let pb = playbook(
        r#"
play "Fuel" hosts=podc01 {
    task "Forever" {
        copy dest="{{ dir }}/out" content="start\n{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}"
    }
}
"#,
    );
    let inv = lab_inventory(lab);
    let var = format!("dir={dir}");
    let out = crate::run_util::run(lab, &pb.path, &inv, &["-e", &var, "--output", "json"]);
    assert_eq!(out.code, 1, "the task fails: {}", out.show());
    let results = out.results("Forever");
    let result = results
        .first()
        .unwrap_or_else(|| panic!("no result: {}", out.show()));
    assert_eq!(result["status"], "failed", "{result}");
    assert_eq!(result["error"]["code"], "troupe::render::out_of_fuel", "{result}");
    let message = result["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("<string> does too much work at line 2"),
        "{result}"
    );
    lab.ssh_ok("podc01", &format!("test ! -e {dir}/out"));
}

#[test]
fn a_literal_nul_in_an_argument_is_a_check_error() {
    let lab = Lab::shared();
    let dir = lab.scratch("bad_input_nul_literal");
    let pb = playbook(&format!(
        "play \"Nul\" hosts=all {{\n    task \"Touch\" {{ file \"{dir}/a\\u{{0}}b\" state=\"touch\" }}\n}}\n"
    ));
    let out = check(lab, &pb.path);
    assert_eq!(out.code, CHECK_ERROR, "{}", out.show());
    assert!(
        out.stderr.contains("troupe::dsl::invalid_value"),
        "{}",
        out.show()
    );
    assert!(out.stderr.contains("holds a NUL byte"), "{}", out.show());
    assert!(out.stderr.contains("play.kdl:2:"), "located: {}", out.show());
    let inv = lab_inventory(lab);
    let out = crate::run_util::run(lab, &pb.path, &inv, &[]);
    assert_eq!(out.code, CHECK_ERROR, "{}", out.show());
    for h in lab.host_names() {
        assert_eq!(lab.ssh_ok(h, &format!("ls -A {dir}")), "", "{h} untouched");
    }
}

#[test]
fn a_rendered_nul_in_an_argument_fails_the_task_and_touches_nothing() {
    let lab = Lab::shared();
    let dir = lab.scratch("bad_input_nul_rendered");
    let pb = playbook(
        "play \"Nul\" hosts=all {\n    task \"Touch\" { file \"{{ dir }}/{{ name }}\" state=\"touch\" }\n}\n",
    );
    let inv = lab_inventory(lab);
    let vars = format!("{{\"dir\": \"{dir}\", \"name\": \"a\\u0000b\"}}");
    let out = crate::run_util::run(lab, &pb.path, &inv, &["-e", &vars, "--output", "json"]);
    assert_eq!(out.code, 1, "the task fails: {}", out.show());
    let recap = out.recap();
    for h in lab.host_names() {
        assert_eq!(
            crate::run_util::stats(&recap, h),
            (0, 0, 1, 0, 0),
            "failed, not unreachable: {recap}"
        );
        assert_eq!(lab.ssh_ok(h, &format!("ls -A {dir}")), "", "{h} untouched");
    }
    let results = out.results("Touch");
    let r = results
        .first()
        .unwrap_or_else(|| panic!("no result: {}", out.show()));
    assert_eq!(r["error"]["code"], "troupe::task::nul_byte", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("argument `path`"),
        "{r}"
    );
}

/// Issue 11.7: each of these passed `check` and failed mid-run.
#[test]
fn missing_templates_and_files_and_unknown_filters_and_tests_are_check_errors() {
    let lab = Lab::shared();
    let cases: [(&str, &str, &str); 6] = [
        (
            r#"template src="nosuch.j2" dest="/srv/tests/x""#,
            "troupe::check::template_not_found",
            "template `nosuch.j2` not found",
        ),
        (
            r#"copy src="nosuch.txt" dest="/srv/tests/x""#,
            "troupe::check::file_not_found",
            "`copy` source `nosuch.txt` not found",
        ),
        (
            r#"template src="json_query.j2" dest="/srv/tests/x""#,
            "troupe::check::unknown_name",
            "template `json_query.j2` (line 2) uses the unknown filter `json_query`",
        ),
        (
            r#"template src="finished.j2" dest="/srv/tests/x""#,
            "troupe::check::unknown_name",
            "uses the unknown test `finished`",
        ),
        (
            r#"debug msg="{{ a | json_query(b) }}""#,
            "troupe::check::unknown_name",
            "argument `msg` uses the unknown filter `json_query`",
        ),
        (
            r#"debug msg="x"; when "r is finished""#,
            "troupe::check::unknown_name",
            "`when` uses the unknown test `finished`",
        ),
    ];
    for (task, code, message) in cases {
        let pb = playbook(&format!(
            "play \"p\" hosts=all {{\n    task \"Bad\" {{ {task} }}\n}}\n"
        ));
        let templates = pb.dir.path().join("templates");
        std::fs::create_dir(&templates).unwrap();
        std::fs::write(
            templates.join("json_query.j2"),
            "a\n{{ {'x': 1} | json_query({'y': 2}) }}\n",
        )
        .unwrap();
        std::fs::write(
            templates.join("finished.j2"),
            "{% if r is finished %}x{% endif %}\n",
        )
        .unwrap();
        let out = check(lab, &pb.path);
        assert_eq!(out.code, CHECK_ERROR, "{task}: {}", out.show());
        assert!(out.stderr.contains(code), "{task}: {}", out.show());
        assert!(out.stderr.contains(message), "{task}: {}", out.show());
        assert!(
            out.stderr.contains("play.kdl:2:"),
            "{task}: located at the task: {}",
            out.show()
        );
    }
}

#[test]
fn run_of_a_playbook_with_a_bad_later_template_touches_nothing() {
    let lab = Lab::shared();
    let dir = lab.scratch("bad_input_later_template");
    let pb = playbook(
        r#"
play "Two" hosts=all {
    task "First" { file "{{ dir }}/first" state="touch" }
    task "Later" { template src="later.j2" dest="{{ dir }}/later" }
}
"#,
    );
    let templates = pb.dir.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    std::fs::write(templates.join("later.j2"), "{{ base | json_query(extra) }}\n").unwrap();
    let inv = lab_inventory(lab);
    let var = format!("dir={dir}");
    let out = crate::run_util::run(lab, &pb.path, &inv, &["-e", &var]);
    assert_eq!(out.code, CHECK_ERROR, "{}", out.show());
    assert!(
        out.stderr.contains("uses the unknown filter `json_query`"),
        "{}",
        out.show()
    );
    assert!(!out.stdout.contains("First"), "no task started: {}", out.show());
    for h in lab.host_names() {
        assert_eq!(
            lab.ssh_ok(h, &format!("ls -A {dir}")),
            "",
            "{h}: the first task's file is absent"
        );
    }
}
