//! The rendered systemd unit passes `systemd-analyze verify`, and the check is strict
//! enough to catch a bad unit (systemd only warns about unknown values, so warnings
//! naming the unit count as failures).

use crate::common;

use std::path::Path;
use std::process::Command;

/// `Ok(())` when the unit verifies without a word about it; `Err(output)` otherwise.
/// `None` when systemd-analyze is not installed.
fn verify(unit_text: &str) -> Option<Result<(), String>> {
    let tool = Path::new("/usr/bin/systemd-analyze");
    if !tool.exists() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("etcd.service");
    std::fs::write(&unit, unit_text).unwrap();
    let out = Command::new(tool)
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("etcd.service") || l.contains(&*unit.to_string_lossy()))
        .collect();
    if out.status.success() && about_unit.is_empty() {
        Some(Ok(()))
    } else {
        Some(Err(format!("{}: {}", out.status, stderr)))
    }
}

#[test]
fn rendered_unit_passes_systemd_analyze_verify() {
    let r = common::renderer();
    for (host, ctx) in common::seed_contexts() {
        let unit = r.render_file("etcd.service.j2", &ctx).unwrap();
        match verify(&unit) {
            None => {
                println!("skipped: /usr/bin/systemd-analyze is not installed");
                return;
            }
            Some(Ok(())) => {}
            Some(Err(e)) => panic!("{host}: {e}\n{unit}"),
        }
    }
}

/// Guards the check above: a typo systemd merely warns about must fail it.
#[test]
fn a_bad_unit_fails_the_check() {
    let r = common::renderer();
    let (_, ctx) = common::seed_contexts().remove(0);
    let unit = r
        .render_file("etcd.service.j2", &ctx)
        .unwrap()
        .replace("Type=notify", "Type=notifyy");
    match verify(&unit) {
        None => println!("skipped: /usr/bin/systemd-analyze is not installed"),
        Some(result) => assert!(result.is_err(), "a bad Type= was accepted"),
    }
}
