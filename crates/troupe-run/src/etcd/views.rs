//! What troupe knows of a cluster, as data: members as the list shows them, each
//! endpoint's status, and the cluster's health judged through one member. Registered
//! as task results, so their field names are part of the playbook interface.

use serde::Serialize;

use super::membership::{Health, MemberView, View};

/// Member IDs as etcdctl prints them.
pub fn hex_id(id: u64) -> String {
    format!("{id:x}")
}

fn ser_hex<S: serde::Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex_id(*id))
}

/// One entry of the member list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberInfo {
    #[serde(serialize_with = "ser_hex")]
    pub id: u64,
    /// Empty until the member has started and published itself.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
    /// Started = it has published its name and client URLs.
    pub started: bool,
}

impl MemberInfo {
    pub(super) fn from_etcd(m: &etcd_client::Member) -> MemberInfo {
        MemberInfo {
            id: m.id(),
            name: m.name().to_string(),
            peer_urls: m.peer_urls().to_vec(),
            client_urls: m.client_urls().to_vec(),
            is_learner: m.is_learner(),
            started: !m.name().is_empty() && !m.client_urls().is_empty(),
        }
    }

    /// The name, or for a member that never started, what identifies it.
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            format!(
                "unstarted member {} ({})",
                hex_id(self.id),
                self.peer_urls.join(",")
            )
        } else {
            self.name.clone()
        }
    }
}

/// `etcdctl endpoint status`, as data.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub member_id: String,
    pub cluster_id: String,
    pub version: String,
    pub db_size: i64,
    pub leader: String,
    pub raft_index: u64,
    pub raft_term: u64,
    pub raft_applied_index: u64,
    pub is_learner: bool,
    pub errors: Vec<String>,
}

/// Health of one member as judged from the reference member's view.
#[derive(Debug, Clone, Serialize)]
pub struct MemberHealth {
    #[serde(flatten)]
    pub member: MemberInfo,
    pub healthy: bool,
    pub problem: Option<String>,
    pub is_leader: bool,
    /// For a member that never started: does its peer URL accept connections?
    pub peer_answering: Option<bool>,
    pub status: Option<EndpointStatus>,
}

/// The cluster as one healthy member sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterHealth {
    /// The endpoint whose view this is.
    pub reference: String,
    pub cluster_id: String,
    pub leader: Option<String>,
    /// Lowest server version among the members that answered.
    pub version: String,
    pub learner_support: bool,
    pub members: Vec<MemberHealth>,
}

impl ClusterHealth {
    /// The pure view [`super::membership::decide`] works on.
    pub fn view(&self, added: impl Fn(u64) -> Option<(std::time::SystemTime, String)>) -> View {
        View {
            members: self
                .members
                .iter()
                .map(|m| MemberView {
                    info: m.member.clone(),
                    health: if !m.member.started {
                        Health::NotStarted {
                            peer_answering: m.peer_answering,
                        }
                    } else if m.healthy {
                        Health::Healthy
                    } else {
                        Health::Unhealthy(m.problem.clone().unwrap_or_default())
                    },
                    added: added(m.member.id),
                })
                .collect(),
            learner_support: self.learner_support,
        }
    }

    /// Every member started and healthy (learners included)?
    pub fn all_healthy(&self) -> bool {
        self.members.iter().all(|m| m.healthy)
    }

    /// One line per unhealthy member, for messages.
    pub fn problems(&self) -> String {
        self.members
            .iter()
            .filter(|m| !m.healthy)
            .map(|m| format!("{}: {}", m.member.label(), m.problem.clone().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// `name=peer,...` of the started members (for `--initial-cluster`).
    pub fn initial_cluster_with(&self, name: &str, peer_url: &str) -> String {
        let mut parts: Vec<String> = Vec::new();
        for m in &self.members {
            if m.member.started && m.member.name != name {
                for p in &m.member.peer_urls {
                    parts.push(format!("{}={}", m.member.name, p));
                }
            }
        }
        parts.push(format!("{name}={peer_url}"));
        parts.join(",")
    }
}

/// By name (unstarted members, which have none, last), so registered lists and the
/// `--etcd-servers` built from them keep one order from run to run.
pub fn sort_members(members: &mut [MemberInfo]) {
    members.sort_by(|a, b| (a.name.is_empty(), &a.name, a.id).cmp(&(b.name.is_empty(), &b.name, b.id)));
}

/// `3.4.23` → (3, 4); unknown → (0, 0).
pub fn version_key(v: &str) -> (u32, u32) {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// Peer URLs compare without a trailing slash.
pub fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_major_minor() {
        assert!(version_key("3.4.23") >= (3, 4));
        assert!(version_key("3.3.27") < (3, 4));
        assert_eq!(version_key("garbage"), (0, 0));
    }
}
