//! Behaviour of the public API the engine relies on: host selection, variable
//! precedence, connection resolution, localhost, roles and the inventory check.

use std::path::Path;

use troupe_dsl::{
    ConnKind, HostPattern, Inventory, LoadOptions, Serial, check_against_inventory, parse_inventory_str,
    parse_playbook_str, parse_vars_str,
};

use crate::{opts, registry::MODULES, render};

const INVENTORY: &str = r#"
defaults user=root port=22
vars { scope "inventory"; only_inventory 1 }
group etcd port=2379 {
    vars { scope "etcd"; only_etcd 1 }
    host podc01 address="10.1.1.201" { vars { scope "host" } }
    host podc02 address="10.1.1.202"
    host podc03 address="10.1.1.203"
    group etcd-new {
        vars { scope "etcd-new" }
        host podc04 address="10.1.1.204" user=core
    }
}
group control-plane { host podc01; host podc04 }
group web { host web1; host web2 }
"#;

fn inv() -> Inventory {
    parse_inventory_str(INVENTORY, "inventory.kdl").unwrap_or_else(|r| panic!("{}", render(&r)))
}

fn select(inv: &Inventory, pattern: &str) -> Vec<String> {
    let p = HostPattern::parse(pattern).unwrap();
    inv.select(&p).into_iter().map(|h| h.name.clone()).collect()
}

#[test]
fn patterns_follow_ansible() {
    let inv = inv();
    let all = ["podc01", "podc02", "podc03", "podc04", "web1", "web2"];
    assert_eq!(select(&inv, "all"), all);
    assert_eq!(select(&inv, "*"), all);
    // a group includes the hosts of its nested groups
    assert_eq!(select(&inv, "etcd"), ["podc01", "podc02", "podc03", "podc04"]);
    assert_eq!(select(&inv, "etcd-new"), ["podc04"]);
    // results come in inventory order whatever the order of the terms
    assert_eq!(select(&inv, "web,podc02"), ["podc02", "web1", "web2"]);
    assert_eq!(select(&inv, "web:podc02"), ["podc02", "web1", "web2"]);
    assert_eq!(select(&inv, "etcd:&control-plane"), ["podc01", "podc04"]);
    assert_eq!(select(&inv, "etcd:!podc01"), ["podc02", "podc03", "podc04"]);
    assert_eq!(select(&inv, "etcd:!etcd-new:!podc01"), ["podc02", "podc03"]);
    // exclusions apply after every union, as in Ansible
    assert_eq!(select(&inv, "!podc01:etcd"), ["podc02", "podc03", "podc04"]);
    // a pattern of only exclusions starts from all
    assert_eq!(select(&inv, "!etcd"), ["web1", "web2"]);
    assert_eq!(select(&inv, "&control-plane"), ["podc01", "podc04"]);
    // globs match host names and group names
    assert_eq!(select(&inv, "podc0[13]"), ["podc01", "podc03"]);
    assert_eq!(select(&inv, "etcd-*"), ["podc04"]);
    assert_eq!(select(&inv, "w?b*"), ["web1", "web2"]);
    assert!(select(&inv, "nothing").is_empty());
}

#[test]
fn implicit_localhost() {
    let inv = inv();
    // not part of all, but selectable by name, with a local connection
    assert!(!select(&inv, "all").contains(&"localhost".to_string()));
    assert!(!select(&inv, "local*").contains(&"localhost".to_string()));
    assert_eq!(select(&inv, "localhost"), ["localhost"]);
    assert_eq!(select(&inv, "localhost,web1"), ["web1", "localhost"]);
    assert!(select(&inv, "localhost:!localhost").is_empty());
    let local = inv.localhost();
    assert_eq!(local.conn.connection, Some(ConnKind::Local));
    assert_eq!(
        local.conn.user.as_deref(),
        Some("root"),
        "the defaults still apply"
    );
    assert!(inv.host("localhost").is_some());
    assert!(!inv.hosts.contains_key("localhost"));

    let own = parse_inventory_str("host localhost address=\"127.0.0.1\" port=2222", "i.kdl").unwrap();
    assert!(own.implicit_localhost.is_none());
    assert_eq!(own.localhost().conn.port, Some(2222));
    assert_eq!(
        own.localhost().conn.connection,
        None,
        "a defined localhost is used as written"
    );
    assert_eq!(select(&own, "all"), ["localhost"]);
}

#[test]
fn host_groups_and_connection_settings() {
    let inv = inv();
    let podc04 = &inv.hosts["podc04"];
    assert_eq!(podc04.groups, ["etcd", "etcd-new", "control-plane"]);
    // defaults < group etcd (port) < host (user)
    assert_eq!(podc04.conn.port, Some(2379));
    assert_eq!(podc04.conn.user.as_deref(), Some("core"));
    assert_eq!(inv.hosts["web1"].conn.port, Some(22));
    assert_eq!(inv.hosts["web1"].address, None, "no address: connect to the name");
    assert_eq!(inv.groups["etcd"].children, ["etcd-new"]);
}

#[test]
fn inventory_variable_precedence() {
    let inv = inv();
    let v = |host: &str, name: &str| inv.host_vars(host).get(name).cloned().unwrap_or_default();
    // host vars beat group vars beat inventory vars
    assert_eq!(v("podc01", "scope"), "host");
    assert_eq!(v("podc02", "scope"), "etcd");
    // a child group beats its parent, whatever the file order
    assert_eq!(v("podc04", "scope"), "etcd-new");
    assert_eq!(v("web1", "scope"), "inventory");
    assert_eq!(v("podc04", "only_etcd"), 1);
    assert_eq!(v("podc04", "only_inventory"), 1);
    assert_eq!(v("localhost", "scope"), "inventory");
    assert!(inv.host_vars("nope").is_empty());

    // groups at the same depth: the one defined later in the file wins
    let inv = parse_inventory_str(
        "group b { vars { x \"b\" }; host h }\ngroup a { vars { x \"a\" }; host h }",
        "i.kdl",
    )
    .unwrap();
    assert_eq!(inv.host_vars("h")["x"], "a");
}

#[test]
fn a_child_group_defined_before_its_parent_still_ranks_below_it() {
    // `inner` is defined first and only later nested into `outer` by reference
    let inv = parse_inventory_str(
        r#"
        group inner port=2 { vars { x "inner" }; host h }
        group outer port=1 { vars { x "outer" }; group inner }
        "#,
        "i.kdl",
    )
    .unwrap();
    assert_eq!(inv.host_vars("h")["x"], "inner");
    assert_eq!(inv.hosts["h"].conn.port, Some(2));
    assert_eq!(inv.hosts["h"].groups, ["inner", "outer"]);
    assert_eq!(
        inv.groups_by_depth()
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>(),
        ["outer", "inner"]
    );
}

#[test]
fn playbook_keywords_decode() {
    let pb = parse_playbook_str(
        r#"
        play "p" hosts="etcd:!podc01" serial="30%" max-fail-percent=10 {
            task "t" until="r.rc == 0" { shell "true" }
            task "u" retries=2 delay=3 { shell "true" }
        }
        play hosts=web serial=2 { task { debug "x" } }
        "#,
        "pb.kdl",
        MODULES,
        &LoadOptions::default(),
    )
    .unwrap_or_else(|r| panic!("{}", render(&r)));
    let p = &pb.plays[0];
    assert_eq!(p.serial, Some(Serial::Percent(30)));
    assert_eq!(p.max_fail_percent, Some(10));
    assert_eq!(p.tasks[0].retries, 3, "until without retries gets Ansible's 3");
    assert_eq!(p.tasks[0].delay, std::time::Duration::from_secs(5));
    assert_eq!(p.tasks[1].retries, 2);
    assert_eq!(p.tasks[1].delay, std::time::Duration::from_secs(3));
    assert_eq!(pb.plays[1].name, "web", "an unnamed play is named by its hosts");
    assert_eq!(
        pb.plays[1].tasks[0].name, "debug",
        "an unnamed task is named by its module"
    );
    assert_eq!(pb.plays[1].serial, Some(Serial::Count(2)));
    check_against_inventory(&pb, &inv()).unwrap();
}

/// Write `text` to `rel` under `root`, creating its folders.
fn write_under(root: &std::path::Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn role_and_include_when_and_tags_apply_to_every_task_they_bring() {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| write_under(dir.path(), rel, text);
    write(
        "roles/r/tasks.kdl",
        "task \"plain\" { debug \"a\" }\ntask \"own\" when=\"x > 1\" tags=\"own,etcd\" { debug \"b\" }\n",
    );
    write("roles/r/handlers.kdl", "handler \"h\" { debug \"h\" }");
    write("tasks/more.kdl", "task \"inc\" { debug \"c\" }\n");
    let pb_path = dir.path().join("pb.kdl");
    std::fs::write(
        &pb_path,
        "play \"p\" hosts=all {\n  role r when=\"upgrade\" tags=\"etcd,certs\"\n  include \"tasks/more.kdl\" tags=\"more\"\n  role r\n}\n",
    )
    .unwrap();
    let pb = troupe_dsl::load_playbook(&pb_path, MODULES, &LoadOptions::default())
        .unwrap_or_else(|r| panic!("{}", render(&r)));
    let t = &pb.plays[0].tasks;
    let when = |i: usize| t[i].when.as_ref().map(|w| w.src.as_str());
    assert_eq!(when(0), Some("upgrade"));
    assert_eq!(when(1), Some("(upgrade) and (x > 1)"), "both must hold");
    assert_eq!(t[0].tags, ["etcd", "certs"]);
    assert_eq!(t[1].tags, ["own", "etcd", "certs"], "no tag twice");
    assert_eq!((when(2), t[2].tags.as_slice()), (None, &["more".to_string()][..]));
    assert_eq!(when(3), None, "a second use of the role has its own gate");
    assert_eq!(when(4), Some("x > 1"));
    assert!(t[3].tags.is_empty());
    assert!(
        pb.plays[0].handlers[0].when.is_none(),
        "handlers run when notified"
    );

    // Any other property is refused with the ones that exist; a bad `when` points at it.
    std::fs::write(
        &pb_path,
        "play \"p\" hosts=all {\n  role r become=#true\n  include \"tasks/more.kdl\" when=\"a ==\"\n}\n",
    )
    .unwrap();
    let err = troupe_dsl::load_playbook(&pb_path, MODULES, &LoadOptions::default()).unwrap_err();
    let shown = render(&err);
    assert!(shown.contains("become") && shown.contains("when"), "{shown}");
    assert!(shown.contains("a =="), "{shown}");
}

#[test]
fn roles_are_found_next_to_the_playbook_before_the_roles_path() {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| write_under(dir.path(), rel, text);
    write(
        "site/roles/r/tasks.kdl",
        "task \"local copy\" { debug \"local\" }",
    );
    write(
        "shared/r/tasks/main.kdl",
        "task \"shared copy\" { debug \"shared\" }",
    );
    write("shared/r/handlers.kdl", "handler \"h\" { debug \"h\" }");
    write("shared/only-shared/tasks.kdl", "task \"only\" { debug \"x\" } ");
    write(
        "shared/only-shared/handlers.kdl",
        "handler \"h2\" { debug \"h\" }",
    );
    write("shared/only-shared/defaults.kdl", "greeting \"hi\"");
    let pb_path = dir.path().join("site/pb.kdl");
    std::fs::write(
        &pb_path,
        "play \"p\" hosts=all {\n  role r\n  role only-shared { vars { greeting \"hello\" } }\n  role only-shared\n}\n",
    )
    .unwrap();
    let opts = LoadOptions {
        roles_path: vec![dir.path().join("shared")],
    };
    let pb = troupe_dsl::load_playbook(&pb_path, MODULES, &opts).unwrap_or_else(|r| panic!("{}", render(&r)));
    let play = &pb.plays[0];
    let names: Vec<&str> = play.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["local copy", "only", "only"]);
    let role = play.tasks[1].role.as_ref().unwrap();
    assert_eq!(role.name, "only-shared");
    assert_eq!(role.dir, dir.path().join("shared/only-shared"));
    assert_eq!(role.defaults["greeting"], "hi");
    assert_eq!(role.vars["greeting"], "hello");
    assert!(
        play.tasks[2].role.as_ref().unwrap().vars.is_empty(),
        "each use has its own params"
    );
    // a role used twice contributes its handlers once
    let handlers: Vec<&str> = play.handlers.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(handlers, ["h2"]);
    // every file read is kept for later diagnostics
    assert_eq!(pb.sources.files.len(), 5);
    assert!(pb.sources.named(&pb_path).is_some());
}

#[test]
fn inventory_check_uses_the_sources_even_without_files() {
    let pb = parse_playbook_str(
        "play hosts=nowhere { task { debug \"x\" } }",
        "mem.kdl",
        MODULES,
        &opts(),
    )
    .unwrap();
    let report = check_against_inventory(&pb, &inv()).unwrap_err();
    let text = render(&report);
    assert!(
        text.contains("the inventory has no host or group `nowhere`"),
        "{text}"
    );
    assert!(text.contains("mem.kdl:1:12"), "{text}");
}

#[test]
fn vars_files_and_durations() {
    let vars = parse_vars_str("a 1\nb \"x\" \"y\"\nc k=#true", "extra.kdl").unwrap();
    assert_eq!(
        serde_json::to_string(&vars).unwrap(),
        r#"{"a":1,"b":["x","y"],"c":{"k":true}}"#
    );
    let err = troupe_dsl::load_vars_file(Path::new("tests/data/no-such-file.kdl")).unwrap_err();
    assert!(render(&err).contains("cannot read vars file"));
    assert_eq!(
        troupe_dsl::parse_duration("1m30s"),
        Some(std::time::Duration::from_secs(90))
    );
    assert_eq!(troupe_dsl::parse_duration("soon"), None);
}

#[test]
fn locations_point_at_the_source() {
    let pb = parse_playbook_str(
        "play hosts=all {\n    task \"é\" when=\"x\" {\n        shell \"true\"\n    }\n}\n",
        "loc.kdl",
        MODULES,
        &LoadOptions::default(),
    )
    .unwrap();
    let task = &pb.plays[0].tasks[0];
    assert_eq!(task.loc.to_string(), "loc.kdl:2:5");
    assert_eq!(task.when.as_ref().unwrap().loc.to_string(), "loc.kdl:2:14");
    assert_eq!(task.args["cmd"].loc.to_string(), "loc.kdl:3:15");
}

#[test]
fn secret_vars_are_recorded_wherever_vars_are_written() {
    let inv = parse_inventory_str(
        r#"
        vars { (secret)inv_token "abcd1234"; plain "x" }
        group etcd { vars { (secret)group_token "g" }; host podc01 { vars { (secret)host_keys "k1" "k2" } } }
        "#,
        "inventory.kdl",
    )
    .unwrap_or_else(|r| panic!("{}", render(&r)));
    let names: Vec<&str> = inv.secret_vars.iter().map(String::as_str).collect();
    assert_eq!(names, ["inv_token", "group_token", "host_keys"]);
    assert_eq!(
        inv.host_vars("podc01")["host_keys"],
        serde_json::json!(["k1", "k2"])
    );
    // `(secret)` marks the variable; the value keeps the usual shape rule
    assert_eq!(inv.host_vars("podc01")["inv_token"], "abcd1234");

    let pb = parse_playbook_str(
        r#"
        play "p" hosts=all {
            vars { (secret)play_token "p"; (secret)creds user="u" pass="p" }
            task "t" { debug msg="hi"; vars { (secret)task_token "t" } }
        }
        "#,
        "site.kdl",
        MODULES,
        &LoadOptions::default(),
    )
    .unwrap_or_else(|r| panic!("{}", render(&r)));
    let names: Vec<&str> = pb.secret_vars.iter().map(String::as_str).collect();
    assert_eq!(names, ["play_token", "creds", "task_token"]);
    assert_eq!(pb.plays[0].tasks[0].vars["task_token"], "t");

    let dir = std::env::temp_dir().join(format!("troupe-secret-vars-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("extra.kdl");
    std::fs::write(&file, "(secret)etcd_token \"s3cr3t\"\nregion \"eu\"\n").unwrap();
    let (vars, secrets) = troupe_dsl::load_vars_file_with_secrets(&file).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(vars["etcd_token"], "s3cr3t");
    assert_eq!(secrets.iter().collect::<Vec<_>>(), ["etcd_token"]);

    // anything else in parentheses is still an error
    let err = parse_playbook_str(
        r#"play "p" hosts=all { vars { (hidden)x "y" } }"#,
        "site.kdl",
        MODULES,
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert!(render(&err).contains("(secret)"), "{}", render(&err));
}
