//! The I/O half of etcd membership: connect to a cluster (directly, or through the
//! task host's SSH connection), read the member list and each member's status, judge
//! health through an existing member, and make the three membership changes (add,
//! promote, remove) with etcd's transient refusals retried.
//!
//! Every call has a deadline, and every failure becomes an [`EtcdError`] that names the
//! endpoint and states etcd's answer without gRPC noise.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, MemberAddOptions};

use super::dial::{Dialer, bounded, describe};
use super::views::{ClusterHealth, MemberHealth, MemberInfo, hex_id, same_url, sort_members, version_key};
use super::{EtcdError, human};

/// A connection to a cluster through one member that answered.
pub struct Etcd {
    pub dialer: Arc<Dialer>,
    /// The endpoint this client talks to.
    pub endpoint: String,
    client: Client,
}

impl Etcd {
    /// Try the endpoints in order; keep the first that answers `status`.
    pub async fn connect(endpoints: &[String], dialer: Dialer) -> Result<Etcd, EtcdError> {
        let dialer = Arc::new(dialer);
        if endpoints.is_empty() {
            return Err(EtcdError::Unreachable {
                endpoints: String::new(),
                detail: "no endpoints given".into(),
            });
        }
        let mut failures = Vec::new();
        for ep in endpoints {
            match dialer.status_of(ep).await {
                Ok(_) => {
                    let client = dialer.client(ep, Some(dialer.request_timeout)).await?;
                    return Ok(Etcd {
                        dialer,
                        endpoint: ep.clone(),
                        client,
                    });
                }
                Err(EtcdError::Unreachable { detail, .. }) | Err(EtcdError::Request { detail, .. }) => {
                    failures.push(format!("{ep}: {detail}"))
                }
                Err(e) => return Err(e),
            }
        }
        Err(EtcdError::Unreachable {
            endpoints: endpoints.join(", "),
            detail: failures.join("; "),
        })
    }

    fn req(&self, op: &str, e: etcd_client::Error) -> EtcdError {
        EtcdError::Request {
            op: op.to_string(),
            endpoint: self.endpoint.clone(),
            detail: describe(&e),
        }
    }

    /// The cluster ID and its members, as the connected member sees them.
    pub async fn members(&mut self) -> Result<(u64, Vec<MemberInfo>), EtcdError> {
        let t = self.dialer.request_timeout;
        let resp = bounded(t, &self.endpoint, "member list", self.client.member_list()).await?;
        let cluster = resp.header().map(|h| h.cluster_id()).unwrap_or(0);
        let mut members: Vec<MemberInfo> = resp.members().iter().map(MemberInfo::from_etcd).collect();
        sort_members(&mut members);
        Ok((cluster, members))
    }

    pub async fn put(&mut self, key: &str, value: &str) -> Result<(), EtcdError> {
        let t = self.dialer.request_timeout;
        bounded(t, &self.endpoint, "put", self.client.put(key, value, None)).await?;
        Ok(())
    }

    /// Linearizable read through the connected member.
    pub async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, EtcdError> {
        let t = self.dialer.request_timeout;
        let resp = bounded(t, &self.endpoint, "get", self.client.get(key, None)).await?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// Health of every member, judged from the connected member's view: its member
    /// list, its leader, and for each started member a status at that member's own
    /// URL (same leader, no errors) plus, for voting members, a quorum read there.
    pub async fn health(&mut self) -> Result<ClusterHealth, EtcdError> {
        let (cluster_id, members) = self.members().await?;
        let reference = self.dialer.status_of(&self.endpoint).await?;
        let leader = if reference.leader == "0" {
            None
        } else {
            Some(reference.leader.clone())
        };
        let mut set = tokio::task::JoinSet::new();
        for (idx, m) in members.iter().cloned().enumerate() {
            let dialer = self.dialer.clone();
            let leader = leader.clone();
            set.spawn(async move { (idx, judge(&dialer, m, leader).await) });
        }
        let mut judged: Vec<Option<MemberHealth>> = vec![None; members.len()];
        while let Some(res) = set.join_next().await {
            if let Ok((idx, h)) = res {
                judged[idx] = Some(h);
            }
        }
        let members: Vec<MemberHealth> = judged
            .into_iter()
            .zip(members)
            .map(|(h, m)| {
                h.unwrap_or(MemberHealth {
                    member: m,
                    healthy: false,
                    problem: Some("health check crashed".into()),
                    is_leader: false,
                    peer_answering: None,
                    status: None,
                })
            })
            .collect();
        let version = members
            .iter()
            .filter_map(|m| m.status.as_ref().map(|s| s.version.clone()))
            .min_by_key(|v| version_key(v))
            .unwrap_or(reference.version.clone());
        Ok(ClusterHealth {
            reference: self.endpoint.clone(),
            cluster_id: hex_id(cluster_id),
            leader,
            learner_support: version_key(&version) >= (3, 4),
            version,
            members,
        })
    }

    /// Poll [`Etcd::health`] until `done` says so or `patience` runs out; returns the
    /// last view either way (the caller words the failure).
    pub async fn wait_health(
        &mut self,
        patience: Duration,
        done: impl Fn(&ClusterHealth) -> bool,
    ) -> Result<(ClusterHealth, bool), EtcdError> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(200);
        loop {
            let h = self.health().await?;
            if done(&h) {
                return Ok((h, true));
            }
            if start.elapsed() + pause > patience {
                return Ok((h, false));
            }
            tokio::time::sleep(pause).await;
            pause = (pause + Duration::from_millis(100)).min(Duration::from_millis(500));
        }
    }

    /// `member add`, as a learner when asked; retries "unhealthy cluster"; a retry
    /// that finds its own earlier add done is success, not "Peer URLs already exists".
    pub async fn add_member(
        &mut self,
        peer_url: &str,
        learner: bool,
        patience: Duration,
    ) -> Result<(MemberInfo, Vec<MemberInfo>), EtcdError> {
        let client = self.client.clone();
        let url = peer_url.to_string();
        let res = retrying(patience, EtcdError::is_unhealthy_cluster, || {
            let mut c = client.clone();
            let url = url.clone();
            let this = &*self;
            async move {
                let opts = if learner {
                    MemberAddOptions::new().with_is_learner()
                } else {
                    MemberAddOptions::new()
                };
                match c.member_add([url.as_str()], Some(opts)).await {
                    Ok(resp) => {
                        let member = resp.member().map(MemberInfo::from_etcd);
                        let list: Vec<MemberInfo> =
                            resp.member_list().iter().map(MemberInfo::from_etcd).collect();
                        Ok((member, list))
                    }
                    Err(e) => Err(this.req("member add", e)),
                }
            }
        })
        .await;
        match res {
            Ok((Some(member), list)) => Ok((member, list)),
            Ok((None, _)) => self.find_by_peer_url(peer_url).await,
            Err(e) if e.to_string().contains("already exists") => self.find_by_peer_url(peer_url).await,
            Err(e) => Err(self.unhealthy_cluster_exhausted(e, patience)),
        }
    }

    async fn find_by_peer_url(&mut self, peer_url: &str) -> Result<(MemberInfo, Vec<MemberInfo>), EtcdError> {
        let (_, list) = self.members().await?;
        let member = list
            .iter()
            .find(|m| m.peer_urls.iter().any(|p| same_url(p, peer_url)))
            .cloned()
            .ok_or_else(|| EtcdError::Request {
                op: "member add".into(),
                endpoint: self.endpoint.clone(),
                detail: format!("the member list has no member with peer URL {peer_url} after adding it"),
            })?;
        Ok((member, list))
    }

    /// Promote a learner, retrying while it catches up with the leader.
    pub async fn promote(
        &mut self,
        member: &MemberInfo,
        patience: Duration,
    ) -> Result<Vec<MemberInfo>, EtcdError> {
        let id = member.id;
        let res = self
            .change_membership(
                "member promote",
                patience,
                |e| e.is_learner_not_ready() || e.is_unhealthy_cluster(),
                move |mut c| async move { c.member_promote(id).await.map(|r| r.members().to_vec()) },
                // A retry after a lost answer: already voting counts as done.
                |list| list.iter().any(|m| m.id == id && !m.is_learner),
            )
            .await;
        match res {
            Err(e) if e.is_learner_not_ready() => Err(EtcdError::NotInSync {
                name: member.label(),
                waited: human(patience),
            }),
            other => other,
        }
    }

    /// Remove a member by ID; one that is already gone counts as removed.
    pub async fn remove(
        &mut self,
        member: &MemberInfo,
        patience: Duration,
    ) -> Result<Vec<MemberInfo>, EtcdError> {
        let id = member.id;
        self.change_membership(
            "member remove",
            patience,
            EtcdError::is_unhealthy_cluster,
            move |mut c| async move { c.member_remove(id).await.map(|r| r.members().to_vec()) },
            |list| !list.iter().any(|m| m.id == id),
        )
        .await
    }

    /// Retry then verify, shared by promote and remove: run `call` (retrying while
    /// `retryable` says etcd's refusal is transient); when it still fails, read the
    /// member list, and if `done` finds the change made anyway (an earlier attempt whose
    /// answer was lost), that is success. Otherwise the last error, an "unhealthy
    /// cluster" one worded as [`EtcdError::ClusterNotReady`]; except that a learner
    /// that never caught up is left as it is, for `promote` to word.
    async fn change_membership<F, Fut>(
        &mut self,
        op: &str,
        patience: Duration,
        retryable: impl Fn(&EtcdError) -> bool,
        call: F,
        done: impl Fn(&[MemberInfo]) -> bool,
    ) -> Result<Vec<MemberInfo>, EtcdError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<Vec<etcd_client::Member>, etcd_client::Error>>,
    {
        let client = self.client.clone();
        let res = retrying(patience, retryable, || {
            let answer = call(client.clone());
            let this = &*self;
            async move {
                answer
                    .await
                    .map(|list| list.iter().map(MemberInfo::from_etcd).collect::<Vec<_>>())
                    .map_err(|e| this.req(op, e))
            }
        })
        .await;
        match res {
            Ok(list) => Ok(list),
            Err(e) if e.is_learner_not_ready() => Err(e),
            Err(e) => {
                let (_, list) = self.members().await?;
                if done(&list) {
                    return Ok(list);
                }
                Err(self.unhealthy_cluster_exhausted(e, patience))
            }
        }
    }

    fn unhealthy_cluster_exhausted(&self, e: EtcdError, patience: Duration) -> EtcdError {
        if e.is_unhealthy_cluster() {
            EtcdError::ClusterNotReady {
                waited: human(patience),
                detail: e.to_string(),
            }
        } else {
            e
        }
    }
}

async fn judge(dialer: &Dialer, member: MemberInfo, leader: Option<String>) -> MemberHealth {
    let mut out = MemberHealth {
        member,
        healthy: false,
        problem: None,
        is_leader: false,
        peer_answering: None,
        status: None,
    };
    if !out.member.started {
        let peer = out.member.peer_urls.first().cloned().unwrap_or_default();
        let answering = dialer.answers_tcp(&peer).await;
        out.peer_answering = Some(answering);
        out.problem = Some(if answering {
            format!("added but not started; its peer URL {peer} accepts connections but it has not joined")
        } else {
            format!("added but never started; its peer URL {peer} is not answering")
        });
        return out;
    }
    let Some(url) = out.member.client_urls.first().cloned() else {
        out.problem = Some("it publishes no client URL".into());
        return out;
    };
    let status = match dialer.status_of(&url).await {
        Ok(s) => s,
        Err(e) => {
            out.problem = Some(format!("its client URL {url} does not answer: {}", short(&e)));
            return out;
        }
    };
    out.is_leader = leader.as_deref() == Some(status.member_id.as_str());
    let problem = if !status.errors.is_empty() {
        Some(status.errors.join(", "))
    } else if status.leader == "0" {
        Some("it has no leader".to_string())
    } else if leader.as_ref().is_some_and(|l| *l != status.leader) {
        Some(format!(
            "it follows leader {}, the reference member follows {}",
            status.leader,
            leader.clone().unwrap_or_default()
        ))
    } else {
        None
    };
    out.status = Some(status);
    if problem.is_some() {
        out.problem = problem;
        return out;
    }
    if !out.member.is_learner {
        // A linearizable read at this member needs it to reach the quorum.
        if let Err(e) = dialer.get_from(&url, "health", false).await {
            out.problem = Some(format!("it cannot serve a quorum read: {}", short(&e)));
            return out;
        }
    }
    out.healthy = true;
    out
}

fn short(e: &EtcdError) -> String {
    match e {
        EtcdError::Request { detail, .. } | EtcdError::Unreachable { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}

/// Retry `op` with backoff while `retryable` says its error is transient.
async fn retrying<T, F, Fut>(
    patience: Duration,
    retryable: impl Fn(&EtcdError) -> bool,
    mut op: F,
) -> Result<T, EtcdError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, EtcdError>>,
{
    let start = Instant::now();
    // Short pauses: the usual wait is etcd 3.4's 5 s strict-reconfig window after a
    // join, and every 100 ms slept past its end is 100 ms added to the expansion.
    let mut pause = Duration::from_millis(100);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if retryable(&e) && start.elapsed() + pause < patience => {
                tracing::debug!("etcd said {e}; retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}
