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
