//! Snapshots of every etcd template rendered for the seed's three nodes, plus the rules
//! the templates enforce (no quoted `--initial-cluster-state`, the member must be in
//! its own initial cluster).

use crate::common;

use serde_json::json;

/// Renders `template` for podc01..03, one section per host.
fn render_all(template: &str, extra: &[(&str, serde_json::Value)]) -> String {
    let r = common::renderer();
    let mut out = String::new();
    for (host, ctx) in common::seed_contexts() {
        let mut ctx = ctx;
        for (k, v) in extra {
            ctx.insert(*k, v.clone());
        }
        let text = r
            .render_file(template, &ctx)
            .unwrap_or_else(|e| panic!("{template} for {host}: {:?}", miette::Report::new(e)));
        out.push_str(&format!("===== {host}: {template}\n{text}"));
    }
    out
}

#[test]
fn etcd_static_pod_for_three_nodes() {
    insta::assert_snapshot!(render_all("etcd.yaml.j2", &[]));
}

#[test]
fn etcd_env_file_for_three_nodes() {
    insta::assert_snapshot!(render_all("etcd.env.j2", &[]));
}

#[test]
fn etcd_systemd_unit_for_three_nodes() {
    insta::assert_snapshot!(render_all("etcd.service.j2", &[]));
}

#[test]
fn etcd_runit_script_for_three_nodes() {
    insta::assert_snapshot!(render_all("etcd.runit.j2", &[]));
}

/// podc03 joining a running podc01+podc02 cluster, with the post's cfssl file names.
#[test]
fn joining_member_with_cfssl_file_names() {
    let r = common::renderer();
    let (_, mut ctx) = common::seed_contexts().remove(2);
    let pki = "/etc/kubernetes/pki/etcd-certs";
    for (k, v) in [
        ("etcd_initial_cluster_state", json!("existing")),
        (
            "etcd_initial_cluster",
            json!(
                "podc01=https://10.1.1.201:2380,podc02=https://10.1.1.202:2380,podc03=https://10.1.1.203:2380"
            ),
        ),
        ("etcd_pki_dir", json!(pki)),
        ("etcd_ca_file", json!(format!("{pki}/ca.pem"))),
        ("etcd_cert_file", json!(format!("{pki}/server.pem"))),
        ("etcd_key_file", json!(format!("{pki}/server-key.pem"))),
        ("etcd_peer_cert_file", json!(format!("{pki}/peer3.pem"))),
        ("etcd_peer_key_file", json!(format!("{pki}/peer3-key.pem"))),
        (
            "etcd_extra_flags",
            json!({"experimental-initial-corrupt-check": true}),
        ),
    ] {
        ctx.insert(k, v);
    }
    let pod = r.render_file("etcd.yaml.j2", &ctx).unwrap();
    let env = r.render_file("etcd.env.j2", &ctx).unwrap();
    let run = r.render_file("etcd.runit.j2", &ctx).unwrap();
    // The post: "never put double quotes around it, we got burned".
    assert!(pod.contains("\n    - --initial-cluster-state=existing\n"));
    assert!(env.contains("\nETCD_INITIAL_CLUSTER_STATE=existing\n"));
    assert!(run.contains("\n  --initial-cluster-state=existing \\\n"));
    insta::assert_snapshot!(pod);
}

#[test]
fn a_quoted_initial_cluster_state_is_refused() {
    let r = common::renderer();
    let (_, ctx) = common::seed_contexts().remove(0);
    let ctx = ctx.with_var("etcd_initial_cluster_state", json!("\"existing\""));
    let err = r.render_file("etcd.yaml.j2", &ctx).unwrap_err();
    assert_eq!(err.template(), Some("etcd-flags.j2"));
    assert!(
        err.to_string().starts_with(
            r#"invalid operation: etcd_initial_cluster_state must be new or existing (unquoted), got "\"existing\"" in etcd-flags.j2 at line "#
        ),
        "{err}"
    );
}

#[test]
fn a_member_missing_from_its_initial_cluster_is_refused() {
    let r = common::renderer();
    let (_, ctx) = common::seed_contexts().remove(2);
    let ctx = ctx.with_var(
        "etcd_initial_cluster",
        json!("podc01=https://10.1.1.201:2380,podc02=https://10.1.1.202:2380"),
    );
    let err = r.render_file("etcd.runit.j2", &ctx).unwrap_err();
    assert!(
        err.to_string()
            .contains("does not contain this member, podc03=https://10.1.1.203:2380"),
        "{err}"
    );
}

#[test]
fn a_host_without_an_address_names_the_host() {
    let r = common::renderer();
    let mut contexts = common::seed_contexts();
    let (_, ctx) = contexts.remove(0);
    let mut hostvars = (**ctx.hostvars()).clone();
    hostvars["podc02"].shift_remove("address");
    let ctx = ctx.with_hostvars(hostvars);
    let err = r.render_file("etcd.yaml.j2", &ctx).unwrap_err();
    assert!(
        err.to_string()
            .contains("host `podc02` has neither `etcd_address` nor `address` set"),
        "{err}"
    );
}

/// Lab hosts share one machine: each member listens on its own loopback address only.
#[test]
fn lab_members_do_not_listen_on_127_0_0_1() {
    let r = common::renderer();
    let (_, ctx) = common::seed_contexts().remove(0);
    let ctx = ctx
        .with_var("address", json!("127.0.1.1"))
        .with_var("etcd_listen_localhost", json!(false))
        .with_var("etcd_metrics_address", json!("127.0.1.1"))
        .with_var("etcd_initial_cluster", json!("podc01=https://127.0.1.1:2380"));
    let run = r.render_file("etcd.runit.j2", &ctx).unwrap();
    assert!(
        run.contains("--listen-client-urls=https://127.0.1.1:2379 \\"),
        "{run}"
    );
    assert!(
        run.contains("--listen-metrics-urls=http://127.0.1.1:2381 \\"),
        "{run}"
    );
    assert!(!run.contains("127.0.0.1"), "{run}");
}

/// Issue 6: a unique `--initial-cluster-token` per cluster, without the operator having
/// to remember to set one: two clusters whose first members differ get different
/// tokens, every member of one cluster gets the same, and an explicit token wins.
#[test]
fn the_cluster_token_is_unique_per_cluster_unless_set() {
    fn token(rendered: &str) -> String {
        let line = rendered
            .lines()
            .find(|l| l.contains("--initial-cluster-token="))
            .expect("token flag rendered");
        line.split("--initial-cluster-token=")
            .nth(1)
            .unwrap()
            .trim()
            .trim_end_matches('\\')
            .trim()
            .to_string()
    }
    let r = common::renderer();
    let seed: Vec<String> = common::seed_contexts()
        .iter()
        .map(|(_, ctx)| token(&r.render_file("etcd.runit.j2", ctx).unwrap()))
        .collect();
    assert!(
        seed.iter().all(|t| t == &seed[0]),
        "one cluster, one token: {seed:?}"
    );
    assert!(
        seed[0].starts_with("etcd-") && seed[0] != "etcd-cluster",
        "{}",
        seed[0]
    );

    let other_hosts: Vec<(&str, indexmap::IndexMap<String, serde_json::Value>)> = ["podd01", "podd02"]
        .iter()
        .zip(["10.2.0.1", "10.2.0.2"])
        .map(|(name, ip)| {
            (
                *name,
                common::vars(&[("inventory_hostname", json!(name)), ("address", json!(ip))]),
            )
        })
        .collect();
    let (groups, hostvars) = common::inventory(&other_hosts);
    let other = troupe_render::Context::new(other_hosts[0].1.clone())
        .with_groups(groups)
        .with_hostvars(hostvars);
    let other_token = token(&r.render_file("etcd.runit.j2", &other).unwrap());
    assert_ne!(other_token, seed[0], "two clusters must not share a token");

    let (_, ctx) = common::seed_contexts().remove(0);
    let ctx = ctx.with_var("etcd_cluster_token", json!("prod-a-etcd"));
    assert_eq!(
        token(&r.render_file("etcd.runit.j2", &ctx).unwrap()),
        "prod-a-etcd"
    );
}
