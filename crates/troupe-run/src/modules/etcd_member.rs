//! `etcd-member`: make one member present (added as a learner), promoted (started and
//! voting), or absent, one safe step per task.
//!
//! A new member must be *started* between `member add` and `member promote`, and
//! starting it is other tasks' job (write its config, start its service), so the
//! states split the join into idempotent steps: `present` adds it if it is absent and
//! registers the `initial_cluster` its config needs; `promoted` waits for it to start
//! and promotes it once in sync. Every step re-reads the member list, so a re-run
//! continues from wherever a previous run stopped. What is safe is decided by
//! [`crate::etcd::membership::decide`]; this file only does the I/O around it.

use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use serde_json::{Value, json};
use troupe_dsl::registry::{ArgDefault, ArgKind, ArgSpec, ModuleSpec};

use super::args::Reader;
use super::etcd_args::{self, EtcdConn};
use crate::etcd::membership::{Decision, Goal, Want};
use crate::etcd::views::hex_id;
use crate::etcd::{ClusterHealth, Etcd, EtcdError, MemberInfo, decide, journal};
use crate::module::{Change, Check, Module, Outcome, TaskCx, TaskError};

pub struct EtcdMember;

const STATES: &[&str] = &["present", "promoted", "absent"];

static SPEC: ModuleSpec = ModuleSpec {
    name: "etcd-member",
    summary: "Add, promote or remove one etcd member, safely and re-runnably",
    doc: "Reads the member list and the health of every member through an existing member, then \
takes at most one step toward `state`:\n\n\
- `present`: add the member (as a learner when the cluster supports it and `learner=#true`) if it \
is absent. Registers `initial_cluster` (the members so far plus this one) and \
`initial_cluster_state` (`existing`) for the joining member's config.\n\
- `promoted`: wait (up to `timeout`) for the member to start, then promote it, retrying while etcd \
says the learner is not in sync yet.\n\
- `absent`: remove the member (never the last one, never when the remaining healthy voters would \
lose quorum).\n\n\
Refuses, changing nothing, while any voting member is unhealthy, while another member is added \
but not started or not yet promoted (\"a previous change is unfinished\"), or when the peer URL \
belongs to another member. Retries etcd's \"unhealthy cluster\" answer. Registered result: \
`cluster_id`, `member` (id, name, peer_urls, client_urls, is_learner, started), `members`, \
`endpoints` (client URLs of started voting members), `initial_cluster`, `initial_cluster_state`.",
    args: &[
        ArgSpec {
            required: true,
            ..ArgSpec::new("name", ArgKind::String, "Member name (etcd's `--name`).")
        },
        ArgSpec::new(
            "peer-url",
            ArgKind::String,
            "The member's peer URL, `https://10.1.1.203:2380`; required unless `state=\"absent\"` \
(a removal may go by name alone).",
        ),
        ArgSpec {
            default: Some(ArgDefault::Str("present")),
            ..ArgSpec::new(
                "state",
                ArgKind::Enum(STATES),
                "`present`, `promoted` or `absent`.",
            )
        },
        ArgSpec {
            default: Some(ArgDefault::Bool(true)),
            ..ArgSpec::new(
                "learner",
                ArgKind::Bool,
                "Add as a learner first (falls back to a voting add when the cluster lacks learner support).",
            )
        },
        etcd_args::ENDPOINTS,
        etcd_args::CA,
        etcd_args::CERT,
        etcd_args::KEY,
        etcd_args::TLS_FILES,
        etcd_args::VIA,
        etcd_args::TIMEOUT,
    ],
    one_of: &[],
    example: r#"task "add etcd03 as a learner" {
    etcd-member name="etcd03" peer-url="https://10.1.1.203:2380" state="present" ca="pki/ca.pem" cert="pki/client.pem" key="pki/client-key.pem" {
        endpoints "https://10.1.1.201:2379" "https://10.1.1.202:2379"
    }
    register "joined"
}"#,
};

pub struct MemberSpec {
    pub want: Want,
    pub conn: EtcdConn,
    pub timeout: std::time::Duration,
}

/// Registered data: the cluster after (or, when unchanged, as) the step.
fn outcome_data(health: &ClusterHealth, want: &Want) -> Value {
    let member = health.members.iter().map(|m| &m.member).find(|m| {
        m.peer_urls
            .iter()
            .any(|p| crate::etcd::views::same_url(p, &want.peer_url))
    });
    members_data(
        &health.cluster_id,
        &health
            .members
            .iter()
            .map(|m| m.member.clone())
            .collect::<Vec<_>>(),
        member,
        want,
    )
}

fn members_data(cluster_id: &str, members: &[MemberInfo], member: Option<&MemberInfo>, want: &Want) -> Value {
    let mut members = members.to_vec();
    crate::etcd::views::sort_members(&mut members);
    let members = &members[..];
    let mut initial = Vec::new();
    for m in members {
        let is_mine = m
            .peer_urls
            .iter()
            .any(|p| crate::etcd::views::same_url(p, &want.peer_url));
        let name = if is_mine {
            want.name.clone()
        } else {
            m.name.clone()
        };
        if name.is_empty() {
            continue;
        }
        for p in &m.peer_urls {
            initial.push(format!("{name}={p}"));
        }
    }
    if member.is_none() && want.goal != Goal::Absent {
        initial.push(format!("{}={}", want.name, want.peer_url));
    }
    let endpoints: Vec<&String> = members
        .iter()
        .filter(|m| m.started && !m.is_learner)
        .flat_map(|m| m.client_urls.first())
        .collect();
    json!({
        "cluster_id": cluster_id,
        "member": member,
        "members": members,
        "endpoints": endpoints,
        "initial_cluster": initial.join(","),
        "initial_cluster_state": "existing",
    })
}

fn view(health: &ClusterHealth) -> crate::etcd::membership::View {
    health.view(|id| journal::lookup(&health.cluster_id, id))
}

#[async_trait]
impl Module for EtcdMember {
    type Spec = MemberSpec;
    type Plan = Decision;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &Reader<'_>) -> Result<MemberSpec, TaskError> {
        let goal = match a.word("state")? {
            "promoted" => Goal::Promoted,
            "absent" => Goal::Absent,
            _ => Goal::Present,
        };
        // Removal may go by name alone (a dead member's address may be unknown).
        let peer_url = match (a.opt_str("peer-url")?, goal) {
            (Some(url), _) => url,
            (None, Goal::Absent) => String::new(),
            (None, _) => {
                return Err(TaskError::bad_arg(
                    "peer-url",
                    "is required unless state=\"absent\"",
                ));
            }
        };
        if !peer_url.is_empty() {
            crate::etcd::dial::split_url(&peer_url).map_err(|e| TaskError::bad_arg("peer-url", e))?;
        }
        if !peer_url.is_empty() && !peer_url.starts_with("https://") && !peer_url.starts_with("http://") {
            return Err(TaskError::bad_arg(
                "peer-url",
                "give a full URL such as https://10.1.1.203:2380",
            ));
        }
        Ok(MemberSpec {
            want: Want {
                name: a.str("name")?,
                peer_url,
                goal,
                learner: a.bool("learner")?,
            },
            conn: EtcdConn::decode(a)?,
            timeout: etcd_args::timeout(a)?,
        })
    }

    async fn check(&self, spec: &MemberSpec, cx: &TaskCx<'_>) -> Result<Check<Decision>, TaskError> {
        let mut etcd = spec.conn.connect(cx).await?;
        let health = etcd.health().await?;
        match decide(&view(&health), &spec.want, SystemTime::now()) {
            Ok(Decision::Unchanged(why)) => {
                let mut out = Outcome::ok(outcome_data(&health, &spec.want));
                out.msg = Some(why);
                Ok(Check::Unchanged(out))
            }
            Ok(decision) => {
                let summary = decision.summary(&spec.want);
                Ok(Check::Change(Change::new(decision, summary)))
            }
            // In --check, a promotion after a planned (not yet made) add is still a plan;
            // a real run re-decides in `apply` and fails there if it is still absent.
            Err(EtcdError::NotAMember { .. }) => {
                let summary = format!("promote {} once it has been added and started", spec.want.name);
                Ok(Check::Change(Change::new(
                    Decision::AwaitStart {
                        member: placeholder(),
                        then_promote: true,
                    },
                    summary,
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn apply(&self, spec: &MemberSpec, plan: Decision, cx: &TaskCx<'_>) -> Result<Outcome, TaskError> {
        let mut etcd = spec.conn.connect(cx).await?;
        let want = &spec.want;
        let start = Instant::now();
        let msg;
        match plan {
            Decision::Unchanged(_) => unreachable!("unchanged is never planned"),
            Decision::Add { learner } => {
                let (member, members) = etcd.add_member(&want.peer_url, learner, spec.timeout).await?;
                let (cluster_id, _) = etcd.members().await?;
                journal::record(&hex_id(cluster_id), member.id, &want.name);
                msg = format!(
                    "added {} ({}) as {}; start it with --initial-cluster-state=existing",
                    want.name,
                    hex_id(member.id),
                    if learner { "a learner" } else { "a voting member" }
                );
                let mut out =
                    Outcome::changed(members_data(&hex_id(cluster_id), &members, Some(&member), want));
                out.msg = Some(msg);
                return Ok(out);
            }
            Decision::AwaitStart { member, then_promote } => {
                let member = if member.id == 0 {
                    find_mine(&mut etcd, want).await?
                } else {
                    member
                };
                let started = await_start(&mut etcd, &member, want, spec.timeout).await?;
                if then_promote && started.is_learner {
                    let left = spec
                        .timeout
                        .saturating_sub(start.elapsed())
                        .max(std::time::Duration::from_secs(5));
                    etcd.promote(&started, left).await?;
                    msg = format!("{} started and was promoted to a voting member", want.name);
                } else {
                    msg = format!("{} started", want.name);
                }
            }
            Decision::Promote { member } => {
                etcd.promote(&member, spec.timeout).await?;
                msg = format!("promoted {} to a voting member", want.name);
            }
            Decision::Remove { member } => {
                etcd.remove(&member, spec.timeout).await?;
                msg = format!("removed {} ({})", member.label(), hex_id(member.id));
            }
        }
        let health = etcd.health().await?;
        let mut out = Outcome::changed(outcome_data(&health, want));
        out.msg = Some(msg);
        Ok(out)
    }
}

fn placeholder() -> MemberInfo {
    MemberInfo {
        id: 0,
        name: String::new(),
        peer_urls: vec![],
        client_urls: vec![],
        is_learner: true,
        started: false,
    }
}

/// The member with our peer URL, or the "not a member" refusal.
async fn find_mine(etcd: &mut Etcd, want: &Want) -> Result<MemberInfo, TaskError> {
    let (_, members) = etcd.members().await?;
    members
        .into_iter()
        .find(|m| {
            m.peer_urls
                .iter()
                .any(|p| crate::etcd::views::same_url(p, &want.peer_url))
        })
        .ok_or_else(|| {
            EtcdError::NotAMember {
                name: want.name.clone(),
            }
            .into()
        })
}

/// Wait until `member` has started (published its name and client URLs) and answers.
async fn await_start(
    etcd: &mut Etcd,
    member: &MemberInfo,
    want: &Want,
    timeout: std::time::Duration,
) -> Result<MemberInfo, TaskError> {
    let id = member.id;
    let (health, done) = etcd
        .wait_health(timeout, |h| {
            h.members
                .iter()
                .any(|m| m.member.id == id && m.member.started && m.status.is_some())
        })
        .await?;
    let mine = health.members.iter().find(|m| m.member.id == id);
    match mine {
        Some(m) if done => Ok(m.member.clone()),
        Some(_) => {
            let v = view(&health);
            let mv = v
                .members
                .iter()
                .find(|m| m.info.id == id)
                .expect("member is in its own view");
            if mv.info.started {
                Err(TaskError::failed_help(
                    format!(
                        "{} started but does not answer at its client URL: {}",
                        want.name,
                        health.problems()
                    ),
                    "check its client URL, certificates and logs",
                ))
            } else {
                Err(mv.not_started_error(&want.name, SystemTime::now()).into())
            }
        }
        None => Err(TaskError::failed(format!(
            "{} was removed while waiting for it to start",
            want.name
        ))),
    }
}
