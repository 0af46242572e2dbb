//! `etcd-status`: one look at the cluster — member list plus each member's endpoint
//! status (leader, raft index, db size, version) — registered without waiting or
//! judging, like `etcdctl member list` + `endpoint status`. For reports and `when`
//! conditions; `etcd-health` is the one that waits and fails.

use async_trait::async_trait;
use troupe_dsl::registry::ModuleSpec;

use super::args::Reader;
use super::etcd_args::{self, EtcdConn};
use super::etcd_health::health_data;
use crate::module::{Check, Module, Outcome, TaskCx, TaskError};

pub struct EtcdStatus;

static SPEC: ModuleSpec = ModuleSpec {
    name: "etcd-status",
    summary: "Register the etcd member list and every member's endpoint status",
    doc: "Connects through the first endpoint that answers and registers the same data as \
`etcd-health` (`cluster_id`, `leader`, `version`, `healthy`, `members` with each one's `status`: \
leader, raft_index, raft_term, db_size, version, is_learner, errors; `endpoints`) without waiting \
and without failing on unhealthy members. Fails only when no endpoint answers.",
    args: &[
        etcd_args::ENDPOINTS,
        etcd_args::CA,
        etcd_args::CERT,
        etcd_args::KEY,
        etcd_args::TLS_FILES,
        etcd_args::VIA,
    ],
    one_of: &[],
    example: r#"task "etcd status" {
    etcd-status ca="pki/ca.pem" cert="pki/client.pem" key="pki/client-key.pem" {
        endpoints "https://10.1.1.201:2379" "https://10.1.1.202:2379"
    }
    register "status"
}"#,
};

#[async_trait]
impl Module for EtcdStatus {
    type Spec = EtcdConn;
    type Plan = ();

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &Reader<'_>) -> Result<EtcdConn, TaskError> {
        EtcdConn::decode(a)
    }

    async fn check(&self, spec: &EtcdConn, cx: &TaskCx<'_>) -> Result<Check<()>, TaskError> {
        let mut etcd = spec.connect(cx).await?;
        let health = etcd.health().await?;
        let mut out = Outcome::ok(health_data(&health));
        out.msg = Some(
            health
                .members
                .iter()
                .map(|m| {
                    let role = if m.is_leader {
                        "leader"
                    } else if m.member.is_learner {
                        "learner"
                    } else if !m.member.started {
                        "unstarted"
                    } else {
                        "follower"
                    };
                    format!(
                        "{} {role}{}",
                        m.member.label(),
                        if m.healthy { "" } else { " (unhealthy)" }
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        );
        Ok(Check::Unchanged(out))
    }

    async fn apply(&self, _spec: &EtcdConn, _plan: (), _cx: &TaskCx<'_>) -> Result<Outcome, TaskError> {
        Err(TaskError::failed("internal: etcd-status never plans a change"))
    }
}
