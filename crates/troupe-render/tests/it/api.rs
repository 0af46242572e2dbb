//! The public API as the engine uses it: arguments rendered to data with native types,
//! `when` conditions, strictness, the search-dir order and the template cache.

use crate::common;

use serde_json::json;
use troupe_render::{Context, RenderError, Renderer};

fn seed(i: usize) -> Context {
    common::seed_contexts().remove(i).1
}

#[test]
fn a_lone_expression_keeps_its_type() {
    let r = common::renderer();
    let ctx = seed(0).with_var("replicas", json!(3));
    let args = json!({
        "hosts": "{{ groups.etcd }}",
        "count": "{{ replicas }}",
        "big": "{{ replicas > 2 }}",
        "text": "node {{ inventory_hostname }} of {{ groups.etcd | length }}",
        "plain": "no templates { here }",
        "nested": ["{{ hostvars['podc02'].address }}", 7, null, {"k": "{{ replicas + 1 }}"}],
    });
    let out = r.render_value(&args, &ctx).unwrap();
    assert_eq!(
        out,
        json!({
            "hosts": ["podc01", "podc02", "podc03"],
            "count": 3,
            "big": true,
            "text": "node podc01 of 3",
            "plain": "no templates { here }",
            "nested": ["10.1.1.202", 7, null, {"k": 4}],
        })
    );
}

#[test]
fn eval_and_is_true_work_like_ansible_when() {
    let r = common::renderer();
    let ctx = seed(1);
    assert!(r.is_true("inventory_hostname == 'podc02'", &ctx).unwrap());
    assert!(!r.is_true("groups.etcd | length > 3", &ctx).unwrap());
    assert!(r.is_true("etcd_backup is not defined", &ctx).unwrap());
    assert_eq!(
        r.eval("groups.etcd | initial_cluster", &ctx).unwrap(),
        json!("podc01=https://10.1.1.201:2380,podc02=https://10.1.1.202:2380,podc03=https://10.1.1.203:2380")
    );
    let err = r.is_true("etcd_backup", &ctx).unwrap_err();
    assert!(
        matches!(err, RenderError::Undefined { ref name, .. } if name == "etcd_backup"),
        "{err:?}"
    );
}

#[test]
fn plain_strings_come_back_unchanged_and_undefined_is_an_error() {
    let r = common::renderer();
    let ctx = seed(0);
    assert_eq!(
        r.render_str("/etc/etcd/etcd.env", &ctx).unwrap(),
        "/etc/etcd/etcd.env"
    );
    let err = r.render_str("--name={{ etcd_nam }}", &ctx).unwrap_err();
    assert_eq!(err.to_string(), "`etcd_nam` is undefined in <string> at line 1");
    // Strict even inside the quoting filters: never an empty string in a file.
    let err = r.render_str("{{ etcd_nam | quote }}", &ctx).unwrap_err();
    assert!(matches!(err, RenderError::Undefined { .. }), "{err:?}");
    let err = r.render_str("{{ etcd_nam | to_json }}", &ctx).unwrap_err();
    assert!(matches!(err, RenderError::Undefined { .. }), "{err:?}");
}

#[test]
fn hostvars_of_an_unknown_host_are_undefined() {
    let r = common::renderer();
    let err = r
        .render_str("{{ hostvars['podc09'].address }}", &seed(0))
        .unwrap_err();
    assert!(matches!(err, RenderError::Undefined { .. }), "{err:?}");
}

#[test]
fn no_html_escaping_and_trailing_newline_kept() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.j2"), "{{ v }}\n").unwrap();
    let r = Renderer::new(vec![dir.path().to_path_buf()]);
    let ctx = Context::default().with_var("v", json!("a<b & 'c' \"d\""));
    assert_eq!(r.render_file("t.j2", &ctx).unwrap(), "a<b & 'c' \"d\"\n");
}

#[test]
fn first_search_dir_wins_and_includes_search_all_dirs() {
    let role = tempfile::tempdir().unwrap();
    let top = tempfile::tempdir().unwrap();
    std::fs::write(role.path().join("a.j2"), "role a, {% include 'b.j2' %}").unwrap();
    std::fs::write(top.path().join("a.j2"), "top a").unwrap();
    std::fs::write(top.path().join("b.j2"), "top b").unwrap();
    let r = Renderer::new(vec![role.path().to_path_buf(), top.path().to_path_buf()]);
    assert_eq!(
        r.render_file("a.j2", &Context::default()).unwrap(),
        "role a, top b"
    );
    assert_eq!(r.find_file("b.j2"), Some(top.path().join("b.j2")));
}

/// Rendering per host per task must not re-read or re-parse: a template is loaded once.
#[test]
fn templates_are_loaded_once_and_cached() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.j2");
    std::fs::write(&path, "{{ inventory_hostname }}").unwrap();
    let r = Renderer::new(vec![dir.path().to_path_buf()]);
    assert_eq!(r.render_file("t.j2", &seed(0)).unwrap(), "podc01");
    std::fs::remove_file(&path).unwrap();
    assert_eq!(r.render_file("t.j2", &seed(1)).unwrap(), "podc02");
}

#[test]
fn the_renderer_is_shared_across_threads() {
    let r = std::sync::Arc::new(common::renderer());
    let handles: Vec<_> = common::seed_contexts()
        .into_iter()
        .map(|(host, ctx)| {
            let r = r.clone();
            std::thread::spawn(move || {
                let text = r.render_file("etcd.runit.j2", &ctx).unwrap();
                assert!(text.contains(&format!("--name={host}")));
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn an_unreadable_template_is_a_read_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bin.j2"), [0xff, 0xfe, 0x00]).unwrap();
    let r = Renderer::new(vec![dir.path().to_path_buf()]);
    let err = r.render_file("bin.j2", &Context::default()).unwrap_err();
    match err {
        RenderError::Read { path, .. } => assert_eq!(path, dir.path().join("bin.j2")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn templates_strings_and_expressions_can_be_checked_before_running() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/templates");
    let r = Renderer::new(vec![fixtures, common::templates_dir()]);
    r.check_file("etcd.yaml.j2").unwrap();
    assert!(matches!(
        r.check_file("etcd-peers.conf.j2"),
        Err(RenderError::Syntax { line: 4, .. })
    ));
    assert!(matches!(
        r.check_file("nope.j2"),
        Err(RenderError::NotFound { .. })
    ));
    r.check_str("--name={{ inventory_hostname }}").unwrap();
    assert!(matches!(
        r.check_str("{{ a + }}"),
        Err(RenderError::Syntax { .. })
    ));
    r.check_expr("groups.etcd | length > 1").unwrap();
    assert!(matches!(r.check_expr("a, b"), Err(RenderError::Syntax { .. })));
}
