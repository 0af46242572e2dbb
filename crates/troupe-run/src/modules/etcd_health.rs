//! `etcd-health`: wait until every member is started and healthy, judged through an
//! existing member (a node's own health check can lie after a split), optionally that
//! N voting members exist and that given keys read back from every member; register
//! the member list for later tasks. Waiting changes nothing, so it reports `ok`.

use std::time::Instant;

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use troupe_dsl::registry::{ArgDefault, ArgKind, ArgSpec, ModuleSpec};

use super::args::Reader;
use super::etcd_args::{self, EtcdConn};
use crate::etcd::views::hex_id;
use crate::etcd::{ClusterHealth, EtcdError, human, journal};
use crate::module::{Check, Module, Outcome, TaskCx, TaskError};

pub struct EtcdHealth;

const MEMBER_SETS: &[&str] = &["all", "started-voters"];

static SPEC: ModuleSpec = ModuleSpec {
    name: "etcd-health",
    summary: "Wait until every etcd member is healthy; register the member list",
    doc: "Judges each member through the first endpoint that answers: its member list and leader, \
then for each started member a status at that member's own client URL (same leader, no errors) \
and, for voting members, a quorum read there. Waits up to `timeout` until every member (learners \
included) is started and healthy, there are at least `voting` voting members, and every key in \
`read-keys` reads back from every member's own copy. Registered result: `cluster_id`, `leader` \
(name), `version`, `members` (id, name, peer_urls, client_urls, is_learner, started, healthy, \
problem, is_leader, status), `endpoints` (client URLs of voting members), `reads` \
(member → key → value).",
    args: &[
        etcd_args::ENDPOINTS,
        etcd_args::CA,
        etcd_args::CERT,
        etcd_args::KEY,
        etcd_args::TLS_FILES,
        etcd_args::VIA,
        etcd_args::TIMEOUT,
        ArgSpec::new(
            "voting",
            ArgKind::Int,
            "Also wait for at least this many voting members.",
        ),
        ArgSpec::new(
            "read-keys",
            ArgKind::List,
            "Keys that must read back (serializable, from each member's own copy) from every member.",
        ),
        ArgSpec {
            default: Some(ArgDefault::Str("all")),
            ..ArgSpec::new(
                "members",
                ArgKind::Enum(MEMBER_SETS),
                "`all`: every member must be started and healthy; `started-voters`: only the started \
voting members (a learner or an added-but-unstarted member is an unfinished join that a later \
`etcd-member` continues), as checked before resuming a join.",
            )
        },
    ],
    one_of: &[],
    example: r#"task "etcd is healthy" {
    etcd-health ca="pki/ca.pem" cert="pki/client.pem" key="pki/client-key.pem" voting=3 {
        endpoints "https://10.1.1.201:2379" "https://10.1.1.202:2379"
    }
    register "etcd"
}"#,
};

pub struct HealthSpec {
    conn: EtcdConn,
    timeout: std::time::Duration,
    voting: Option<u64>,
    keys: Vec<String>,
    started_voters_only: bool,
}

/// The registered view of the cluster (shared with `etcd-status`).
pub fn health_data(h: &ClusterHealth) -> Value {
    let leader = h
        .members
        .iter()
        .find(|m| m.is_leader)
        .map(|m| m.member.name.clone());
    let endpoints: Vec<&String> = h
        .members
        .iter()
        .filter(|m| m.member.started && !m.member.is_learner)
        .flat_map(|m| m.member.client_urls.first())
        .collect();
    json!({
        "cluster_id": h.cluster_id,
        "reference": h.reference,
        "leader": leader,
        "leader_id": h.leader,
        "version": h.version,
        "healthy": h.all_healthy(),
        "pending": h.members.iter().filter(|m| !m.member.started || m.member.is_learner).map(|m| &m.member).collect::<Vec<_>>(),
        "members": h.members,
        "endpoints": endpoints,
    })
}

#[async_trait]
impl Module for EtcdHealth {
    type Spec = HealthSpec;
    type Plan = ();

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &Reader<'_>) -> Result<HealthSpec, TaskError> {
        Ok(HealthSpec {
            conn: EtcdConn::decode(a)?,
            timeout: etcd_args::timeout(a)?,
            voting: a.opt_u64("voting")?,
            keys: a.opt_str_list("read-keys")?.unwrap_or_default(),
            started_voters_only: a.word("members")? == "started-voters",
        })
    }

    async fn check(&self, spec: &HealthSpec, cx: &TaskCx<'_>) -> Result<Check<()>, TaskError> {
        let start = Instant::now();
        // Members that are still starting count as "not healthy yet", not as a failure.
        let mut etcd = loop {
            match spec.conn.connect(cx).await {
                Ok(etcd) => break etcd,
                Err(e) if start.elapsed() + std::time::Duration::from_millis(500) < spec.timeout => {
                    tracing::debug!("etcd not answering yet: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let voting_ok = |h: &ClusterHealth| {
            spec.voting
                .is_none_or(|n| h.members.iter().filter(|m| !m.member.is_learner).count() as u64 >= n)
        };
        let counted = |m: &crate::etcd::MemberHealth| {
            !spec.started_voters_only || (m.member.started && !m.member.is_learner)
        };
        let healthy = |h: &ClusterHealth| h.members.iter().filter(|m| counted(m)).all(|m| m.healthy);
        let (health, done) = etcd
            .wait_health(spec.timeout, |h| healthy(h) && voting_ok(h))
            .await?;
        if !done {
            let mut detail = health
                .members
                .iter()
                .filter(|m| counted(m) && !m.healthy)
                .map(|m| {
                    let name = match journal::lookup(&health.cluster_id, m.member.id) {
                        Some((_, name)) if m.member.name.is_empty() => {
                            format!("{name} ({})", hex_id(m.member.id))
                        }
                        _ => m.member.label(),
                    };
                    format!("{name}: {}", m.problem.clone().unwrap_or_default())
                })
                .collect::<Vec<_>>()
                .join("; ");
            if !voting_ok(&health) {
                let have = health.members.iter().filter(|m| !m.member.is_learner).count();
                if !detail.is_empty() {
                    detail.push_str("; ");
                }
                detail.push_str(&format!(
                    "{have} voting members, {} expected",
                    spec.voting.unwrap_or(0)
                ));
            }
            return Err(EtcdError::HealthTimeout {
                waited: human(spec.timeout),
                detail,
            }
            .into());
        }
        // Every member's own copy must hold the keys (replication may lag briefly).
        let mut reads = Map::new();
        for m in &health.members {
            let Some(url) = m.member.client_urls.first() else {
                continue;
            };
            let mut got = Map::new();
            for key in &spec.keys {
                let value = loop {
                    match etcd.dialer.get_from(url, key, true).await? {
                        Some(v) => break String::from_utf8_lossy(&v).into_owned(),
                        None if start.elapsed() < spec.timeout => {
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await
                        }
                        None => {
                            return Err(TaskError::failed_help(
                                format!("key {key} does not read back from {} ({url})", m.member.name),
                                "the member may not have caught up, or the data was lost: compare with the snapshot taken before the change",
                            ));
                        }
                    }
                };
                got.insert(key.clone(), Value::String(value));
            }
            reads.insert(m.member.name.clone(), Value::Object(got));
        }
        let mut data = health_data(&health);
        data["reads"] = Value::Object(reads);
        let mut out = Outcome::ok(data);
        out.msg = Some(format!(
            "{} members healthy, leader {}",
            health.members.len(),
            health
                .members
                .iter()
                .find(|m| m.is_leader)
                .map(|m| m.member.name.as_str())
                .unwrap_or("?")
        ));
        Ok(Check::Unchanged(out))
    }

    async fn apply(&self, _spec: &HealthSpec, _plan: (), _cx: &TaskCx<'_>) -> Result<Outcome, TaskError> {
        Err(TaskError::failed("internal: etcd-health never plans a change"))
    }
}
