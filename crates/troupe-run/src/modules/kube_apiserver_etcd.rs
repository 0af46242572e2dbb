//! `kube-apiserver-etcd`: repoint a kubeadm kube-apiserver at the etcd cluster — the
//! seed's last step (`--etcd-servers` plus `--etcd-cafile`, `--etcd-certfile`,
//! `--etcd-keyfile`). The static-pod manifest is edited line by line with
//! [`troupe_render::manifest::set_container_flags`] (kubelet restarts the apiserver on
//! any byte change, so nothing else may move), shown as a diff, written atomically.
//! It refuses to point the apiserver at TLS files that are not on the host: a
//! crash-looping apiserver is worse than an old etcd list.

use async_trait::async_trait;
use serde_json::json;
use troupe_dsl::registry::{ArgDefault, ArgKind, ArgSpec, ModuleSpec};

use super::args::Reader;
use crate::connection::FileAttrs;
use crate::module::{Change, Check, Diff, Module, Outcome, TaskCx, TaskError};

pub struct KubeApiserverEtcd;

static SPEC: ModuleSpec = ModuleSpec {
    name: "kube-apiserver-etcd",
    summary: "Point kube-apiserver's static-pod manifest at the etcd members",
    doc: "Sets `--etcd-servers` (the `servers`, comma-joined) and, when given, `--etcd-cafile`, \
`--etcd-certfile`, `--etcd-keyfile` in the `command` of the `container` in `path`, rewriting only \
those lines (a missing flag is appended to the list). The TLS files must exist on the host. \
Shows a diff; writes atomically, keeping the file's mode. Kubelet notices the change and \
restarts the apiserver. Registered result: `path`, `etcd_servers`.",
    args: &[
        ArgSpec {
            required: true,
            ..ArgSpec::new("servers", ArgKind::List, "etcd client URLs for `--etcd-servers`.")
        },
        ArgSpec::new("cafile", ArgKind::Path, "`--etcd-cafile` on the host."),
        ArgSpec::new("certfile", ArgKind::Path, "`--etcd-certfile` on the host."),
        ArgSpec::new("keyfile", ArgKind::Path, "`--etcd-keyfile` on the host."),
        ArgSpec {
            default: Some(ArgDefault::Str("/etc/kubernetes/manifests/kube-apiserver.yaml")),
            ..ArgSpec::new("path", ArgKind::Path, "The static-pod manifest.")
        },
        ArgSpec {
            default: Some(ArgDefault::Str("kube-apiserver")),
            ..ArgSpec::new("container", ArgKind::String, "Container whose command is edited.")
        },
    ],
    one_of: &[],
    example: r#"task "apiserver uses the etcd cluster" {
    kube-apiserver-etcd cafile="/etc/kubernetes/pki/etcd-certs/ca.pem" certfile="/etc/kubernetes/pki/etcd-certs/client.pem" keyfile="/etc/kubernetes/pki/etcd-certs/client-key.pem" {
        servers "https://10.1.1.201:2379" "https://10.1.1.202:2379" "https://10.1.1.203:2379"
    }
}"#,
};

pub struct ApiserverSpec {
    path: String,
    container: String,
    flags: Vec<(String, String)>,
    files: Vec<String>,
}

#[async_trait]
impl Module for KubeApiserverEtcd {
    type Spec = ApiserverSpec;
    type Plan = String;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &Reader<'_>) -> Result<ApiserverSpec, TaskError> {
        let servers: Vec<String> = a
            .opt_str_list("servers")?
            .unwrap_or_default()
            .iter()
            .flat_map(|s| s.split(',').map(|x| x.trim().to_string()).collect::<Vec<_>>())
            .filter(|s| !s.is_empty())
            .collect();
        if servers.is_empty() {
            return Err(TaskError::bad_arg("servers", "give at least one etcd client URL"));
        }
        if let Some(bad) = servers
            .iter()
            .find(|s| !s.starts_with("https://") && !s.starts_with("http://"))
        {
            return Err(TaskError::bad_arg(
                "servers",
                format!("{bad:?} is not a URL like https://10.1.1.201:2379"),
            ));
        }
        let mut flags = vec![("etcd-servers".to_string(), servers.join(","))];
        let mut files = Vec::new();
        for (arg, flag) in [
            ("cafile", "etcd-cafile"),
            ("certfile", "etcd-certfile"),
            ("keyfile", "etcd-keyfile"),
        ] {
            if let Some(p) = a.opt_str(arg)? {
                flags.push((flag.to_string(), p.clone()));
                files.push(p);
            }
        }
        Ok(ApiserverSpec {
            path: a.str("path")?,
            container: a.str("container")?,
            flags,
            files,
        })
    }

    async fn check(&self, spec: &ApiserverSpec, cx: &TaskCx<'_>) -> Result<Check<String>, TaskError> {
        let Some(bytes) = cx.conn.read_file(&spec.path).await? else {
            return Err(TaskError::failed_help(
                format!("{} does not exist on {}", spec.path, cx.host),
                "is this a kubeadm control-plane node? set `path` to its kube-apiserver manifest",
            ));
        };
        let before = String::from_utf8(bytes)
            .map_err(|_| TaskError::failed(format!("{} is not UTF-8 text", spec.path)))?;
        for f in &spec.files {
            if cx.conn.stat(f).await?.is_none() {
                return Err(TaskError::failed_help(
                    format!(
                        "{f} does not exist on {}: kube-apiserver would fail to start",
                        cx.host
                    ),
                    "copy the etcd CA and client certificate to the node first (the etcd-node role does)",
                ));
            }
        }
        let after = troupe_render::manifest::set_container_flags(&before, &spec.container, &spec.flags)
            .map_err(|e| {
                use miette::Diagnostic;
                let help = e.help().map(|h| h.to_string()).unwrap_or_default();
                TaskError::failed_help(format!("{}: {e}", spec.path), help)
            })?;
        let data = json!({"path": spec.path, "etcd_servers": spec.flags[0].1});
        if after == before {
            return Ok(Check::Unchanged(Outcome::ok(data)));
        }
        let changed: Vec<&str> = spec.flags.iter().map(|(f, _)| f.as_str()).collect();
        let summary = format!("set --{} in {}", changed.join(", --"), spec.path);
        let diff = Diff {
            path: spec.path.clone(),
            before,
            after: after.clone(),
        };
        Ok(Check::Change(Change::new(after, summary).with_diff(diff)))
    }

    async fn apply(
        &self,
        spec: &ApiserverSpec,
        after: String,
        cx: &TaskCx<'_>,
    ) -> Result<Outcome, TaskError> {
        cx.conn
            .write_file(&spec.path, after.as_bytes(), &FileAttrs::default())
            .await?;
        let mut out = Outcome::changed(json!({"path": spec.path, "etcd_servers": spec.flags[0].1}));
        out.msg = Some(format!("--etcd-servers={}", spec.flags[0].1));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testing::{FakeHost, args};

    const MANIFEST: &str = "apiVersion: v1
kind: Pod
metadata:
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-apiserver
    - --advertise-address=10.1.1.201
    - --etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt
    - --etcd-certfile=/etc/kubernetes/pki/apiserver-etcd-client.crt
    - --etcd-keyfile=/etc/kubernetes/pki/apiserver-etcd-client.key
    - --etcd-servers=https://127.0.0.1:2379
    image: k8s.gcr.io/kube-apiserver:v1.12.3
    name: kube-apiserver
  hostNetwork: true
";

    #[tokio::test]
    async fn repoints_the_flags_then_is_unchanged() {
        let host = FakeHost::new();
        let path = "/etc/kubernetes/manifests/kube-apiserver.yaml";
        host.put_file(path, MANIFEST.as_bytes());
        for f in ["/pki/ca.pem", "/pki/client.pem", "/pki/client-key.pem"] {
            host.put_file(f, b"x");
        }
        let a = args(
            r#"{"servers": ["https://10.1.1.201:2379", "https://10.1.1.202:2379"],
                "cafile": "/pki/ca.pem", "certfile": "/pki/client.pem", "keyfile": "/pki/client-key.pem"}"#,
        );
        let out = host.run(&KubeApiserverEtcd, a.clone()).await.unwrap();
        assert!(out.changed);
        let text = String::from_utf8(host.file(path).unwrap().content).unwrap();
        assert!(
            text.contains("    - --etcd-servers=https://10.1.1.201:2379,https://10.1.1.202:2379\n"),
            "{text}"
        );
        assert!(text.contains("    - --etcd-cafile=/pki/ca.pem\n"));
        assert!(text.contains("    - --advertise-address=10.1.1.201\n"));
        assert!(!host.run(&KubeApiserverEtcd, a).await.unwrap().changed);
    }

    #[tokio::test]
    async fn refuses_missing_tls_files() {
        let host = FakeHost::new();
        host.put_file(
            "/etc/kubernetes/manifests/kube-apiserver.yaml",
            MANIFEST.as_bytes(),
        );
        let a = args(r#"{"servers": "https://10.1.1.201:2379", "cafile": "/pki/ca.pem"}"#);
        let err = host.run(&KubeApiserverEtcd, a).await.unwrap_err();
        assert!(err.to_string().contains("/pki/ca.pem does not exist"), "{err}");
    }
}
