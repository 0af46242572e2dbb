//! Lookups on the controller (issue 16): `file`, `env`, `pipe`, `password`, through
//! `lookup` and `query`, with the errors a missing file, an unset variable, a failing
//! command or an unknown lookup gives.

use std::os::unix::fs::PermissionsExt as _;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use troupe_render::{Context, Renderer};

fn renderer(dir: &std::path::Path) -> Renderer {
    let r = Renderer::new(vec![]);
    r.set_lookup_dirs(vec![dir.join("role"), dir.to_path_buf()]);
    r
}

fn eval(r: &Renderer, expr: &str) -> Value {
    r.eval(expr, &Context::default())
        .unwrap_or_else(|e| panic!("{expr}: {e:?}"))
}

fn fails(r: &Renderer, expr: &str) -> String {
    match r.eval(expr, &Context::default()) {
        Ok(v) => panic!("{expr} evaluated to {v}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn file_reads_the_tasks_folders_in_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("role/files")).unwrap();
    std::fs::create_dir_all(dir.path().join("files")).unwrap();
    std::fs::write(dir.path().join("role/files/key.pub"), "role key\n\n").unwrap();
    std::fs::write(dir.path().join("files/key.pub"), "play key\n").unwrap();
    std::fs::write(dir.path().join("files/other"), "  other\n").unwrap();
    let r = renderer(dir.path());
    assert_eq!(eval(&r, "lookup('file', 'key.pub')"), json!("role key"));
    assert_eq!(eval(&r, "lookup('file', 'other', lstrip=true)"), json!("other"));
    assert_eq!(
        eval(&r, "lookup('file', 'other', rstrip=false)"),
        json!("  other\n")
    );
    assert_eq!(
        eval(&r, "lookup('file', 'key.pub', 'other')"),
        json!("role key,  other")
    );
    assert_eq!(
        eval(&r, "query('file', 'key.pub', 'other')"),
        json!(["role key", "  other"])
    );
    let abs = dir.path().join("files/key.pub");
    assert_eq!(
        eval(&r, &format!("lookup('file', '{}')", abs.display())),
        json!("play key")
    );
    let err = fails(&r, "lookup('file', 'nope.txt')");
    assert!(
        err.contains("`nope.txt` not found on the controller") && err.contains("role/files/nope.txt"),
        "{err}"
    );
}

#[test]
fn env_and_pipe_run_on_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    let r = renderer(dir.path());
    assert_eq!(
        eval(&r, "lookup('env', 'PATH')"),
        json!(std::env::var("PATH").unwrap())
    );
    assert_eq!(
        eval(&r, "lookup('env', 'TROUPE_SURELY_UNSET_VAR', default='dflt')"),
        json!("dflt")
    );
    assert!(fails(&r, "lookup('env', 'TROUPE_SURELY_UNSET_VAR')").contains("is not set on the controller"));
    assert_eq!(eval(&r, "lookup('pipe', 'echo hi; echo warn >&2')"), json!("hi"));
    let err = fails(&r, "lookup('pipe', 'echo broken >&2; exit 3')");
    assert!(err.contains("failed") && err.contains("broken"), "{err}");
    assert!(fails(&r, "lookup('nosuch', 'x')").contains("unknown lookup `nosuch`"));
}

#[test]
fn password_is_generated_once_into_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let r = renderer(dir.path());
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = seen.clone();
    r.on_secret(Arc::new(move |s: &str| sink.lock().unwrap().push(s.to_string())));

    let first = eval(&r, "lookup('password', 'creds/db length=12')");
    let pw = first.as_str().unwrap().to_string();
    assert_eq!(pw.len(), 12);
    // relative paths are kept under the task's first folder
    let file = dir.path().join("role/creds/db");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{pw}\n"));
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        eval(&r, "lookup('password', 'creds/db length=30')"),
        first,
        "read back, not regenerated"
    );
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [pw.clone(), pw.clone()],
        "each value reaches the secret sink"
    );

    let digits = eval(&r, "lookup('password', 'creds/pin', chars='digits', length=8)");
    assert!(
        digits.as_str().unwrap().chars().all(|c| c.is_ascii_digit()),
        "{digits}"
    );
    let default = eval(&r, "lookup('password', 'creds/dflt')");
    assert_eq!(default.as_str().unwrap().len(), 20);
    assert!(
        default
            .as_str()
            .unwrap()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".,:-_".contains(c))
    );
    let a = eval(&r, "lookup('password', '/dev/null')");
    assert_ne!(
        a,
        eval(&r, "lookup('password', '/dev/null')"),
        "/dev/null: a new one each time"
    );

    std::fs::write(dir.path().join("role/creds/ansible"), "kept salt=abcdefgh\n").unwrap();
    assert_eq!(eval(&r, "lookup('password', 'creds/ansible')"), json!("kept"));
    assert!(fails(&r, "lookup('password', 'creds/x size=3')").contains("unknown option `size=3`"));
}
