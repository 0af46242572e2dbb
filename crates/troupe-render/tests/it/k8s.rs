//! The rendered etcd manifest and the edited kube-apiserver manifest are real
//! Kubernetes Pods: they deserialize into k8s-openapi's `Pod` with no key left over.

use crate::common;

use k8s_openapi::api::core::v1::Pod;
use troupe_render::manifest::set_container_flags;

/// Deserializes `yaml` into a Pod, failing on any key the Pod type does not know.
fn strict_pod(yaml: &str) -> Result<Pod, String> {
    let mut unknown = Vec::new();
    let pod: Pod = serde_ignored::deserialize(serde_yaml::Deserializer::from_str(yaml), |path| {
        unknown.push(path.to_string())
    })
    .map_err(|e| format!("not a Pod: {e}"))?;
    if unknown.is_empty() {
        Ok(pod)
    } else {
        Err(format!("unknown keys: {}", unknown.join(", ")))
    }
}

fn command(pod: &Pod) -> Vec<String> {
    pod.spec.as_ref().unwrap().containers[0].command.clone().unwrap()
}

#[test]
fn rendered_etcd_manifests_are_pods_with_nothing_unknown() {
    let r = common::renderer();
    for (host, ctx) in common::seed_contexts() {
        let yaml = r.render_file("etcd.yaml.j2", &ctx).unwrap();
        let pod = strict_pod(&yaml).unwrap_or_else(|e| panic!("{host}: {e}\n{yaml}"));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.host_network, Some(true));
        assert_eq!(spec.priority_class_name.as_deref(), Some("system-node-critical"));
        let c = &spec.containers[0];
        assert_eq!(c.image.as_deref(), Some("registry.k8s.io/etcd:3.5.15-0"));
        let probe = c.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(
            probe.path.as_deref(),
            Some("/health?exclude=NOSPACE&serializable=true")
        );
        let cmd = command(&pod);
        assert_eq!(cmd[0], "etcd");
        assert!(cmd.contains(&format!("--name={host}")), "{cmd:?}");
        assert!(cmd.contains(&"--initial-cluster-state=new".to_string()));
        assert!(cmd.contains(
            &"--initial-cluster=podc01=https://10.1.1.201:2380,podc02=https://10.1.1.202:2380,podc03=https://10.1.1.203:2380"
                .to_string()
        ));
    }
}

/// Guards the check above: a misspelt key must be caught, not silently dropped.
#[test]
fn an_unknown_key_is_detected() {
    let r = common::renderer();
    let (_, ctx) = common::seed_contexts().remove(0);
    let yaml = r.render_file("etcd.yaml.j2", &ctx).unwrap();
    let bad = yaml.replace(
        "  hostNetwork: true\n",
        "  hostNetwork: true\n  hostNetwrk: true\n",
    );
    let err = strict_pod(&bad).unwrap_err();
    // k8s-openapi's hand-written visitors hide the field name of the parent level.
    assert!(
        err.starts_with("unknown keys: spec.") && err.ends_with("hostNetwrk"),
        "{err}"
    );
}

fn fixture() -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kube-apiserver.yaml"),
    )
    .unwrap()
}

/// The seed's step 7: kube-apiserver pointed at the three members with the new client
/// cert, `--etcd-servers` built from the inventory.
fn etcd_flags() -> Vec<(String, String)> {
    let r = common::renderer();
    let (_, ctx) = common::seed_contexts().remove(0);
    let servers = r
        .render_str("{{ groups.etcd | etcd_endpoints(hostvars) }}", &ctx)
        .unwrap();
    let pki = "/etc/kubernetes/pki/etcd-certs";
    vec![
        ("etcd-servers".into(), servers),
        ("etcd-cafile".into(), format!("{pki}/ca.pem")),
        ("etcd-certfile".into(), format!("{pki}/client.pem")),
        ("etcd-keyfile".into(), format!("{pki}/client-key.pem")),
    ]
}

fn diff(a: &str, b: &str) -> String {
    similar::TextDiff::from_lines(a, b)
        .unified_diff()
        .context_radius(1)
        .to_string()
}

#[test]
fn kube_apiserver_edit_changes_only_the_etcd_flags() {
    let before = fixture();
    let after = set_container_flags(&before, "kube-apiserver", &etcd_flags()).unwrap();
    let pod = strict_pod(&after).unwrap();
    let cmd = command(&pod);
    assert!(cmd.contains(
        &"--etcd-servers=https://10.1.1.201:2379,https://10.1.1.202:2379,https://10.1.1.203:2379".to_string()
    ));
    assert_eq!(cmd.len(), command(&strict_pod(&before).unwrap()).len());
    insta::assert_snapshot!(diff(&before, &after));
    // Applying the same change again is a no-op.
    let again = set_container_flags(&after, "kube-apiserver", &etcd_flags()).unwrap();
    assert_eq!(again, after);
}

/// An operator's comments and a missing flag: comments stay, the flag is appended.
#[test]
fn kube_apiserver_edit_keeps_comments_and_appends_missing_flags() {
    let before = fixture()
        .replace(
            "    - --etcd-keyfile=/etc/kubernetes/pki/apiserver-etcd-client.key\n",
            "",
        )
        .replace(
            "    - --etcd-servers=https://127.0.0.1:2379\n",
            "    # single etcd until the expansion, see ticket OPS-12\n    - --etcd-servers=https://127.0.0.1:2379  # local member\n",
        );
    let after = set_container_flags(&before, "kube-apiserver", &etcd_flags()).unwrap();
    strict_pod(&after).unwrap();
    insta::assert_snapshot!(diff(&before, &after));
}
