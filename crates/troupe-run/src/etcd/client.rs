//! The I/O half of etcd membership: connect to a cluster (directly, or through the
//! task host's SSH connection), read the member list and each member's status, judge
//! health through an existing member, and make the three membership changes (add,
//! promote, remove) with etcd's transient refusals retried.
//!
//! Every call has a deadline, and every failure becomes an [`EtcdError`] that names the
//! endpoint and states etcd's answer without gRPC noise.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, MemberAddOptions, TlsOptions};
use serde::Serialize;

use super::membership::{Health, MemberView, View};
use super::tunnel::Forward;
use super::{EtcdError, human};
use crate::connection::Connection;

/// PEM contents of the CA that signed etcd's server certificates, and of the client
/// certificate and key troupe presents.
#[derive(Clone)]
pub struct TlsPem {
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl TlsPem {
    /// Reject material that is plainly not PEM before etcd gets a chance to say
    /// "transport error".
    pub fn validate(&self) -> Result<(), EtcdError> {
        let has = |data: &[u8], marker: &str| String::from_utf8_lossy(data).contains(marker);
        if !has(&self.ca, "-----BEGIN CERTIFICATE-----") {
            return Err(EtcdError::Tls {
                detail: "the CA file holds no PEM certificate".into(),
            });
        }
        if !has(&self.cert, "-----BEGIN CERTIFICATE-----") {
            return Err(EtcdError::Tls {
                detail: "the cert file holds no PEM certificate".into(),
            });
        }
        if !has(&self.key, "PRIVATE KEY-----") {
            return Err(EtcdError::Tls {
                detail: "the key file holds no PEM private key".into(),
            });
        }
        Ok(())
    }
}

/// How troupe reaches etcd's client URLs.
#[derive(Clone)]
pub enum Route {
    /// From the controller, as the URLs say.
    Direct,
    /// Through forwarded channels of this host's SSH connection; URLs are as it sees them.
    Ssh(Arc<dyn Connection>),
}

/// Opens clients to etcd URLs along a [`Route`], with TLS, keeping one forwarder per
/// remote address alive for as long as the dialer lives.
pub struct Dialer {
    tls: Option<TlsPem>,
    route: Route,
    forwards: tokio::sync::Mutex<HashMap<(String, u16), Arc<Forward>>>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// A client URL split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlParts {
    pub https: bool,
    pub host: String,
    pub port: u16,
}

/// Split `https://10.1.1.201:2379` (or `[::1]:2379`, or a bare `host:port`).
pub fn split_url(url: &str) -> Result<UrlParts, String> {
    let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        (true, url)
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = if let Some(stripped) = rest.strip_prefix('[') {
        let (host, after) = stripped.split_once(']').ok_or_else(|| format!("bad URL {url}"))?;
        (host.to_string(), after.strip_prefix(':').unwrap_or(""))
    } else {
        let (host, port) = rest.rsplit_once(':').unwrap_or((rest, ""));
        (host.to_string(), port)
    };
    let port = if port.is_empty() {
        2379
    } else {
        port.parse::<u16>()
            .map_err(|_| format!("bad port in URL {url}"))?
    };
    if host.is_empty() {
        return Err(format!("no host in URL {url}"));
    }
    Ok(UrlParts { https, host, port })
}

impl Dialer {
    pub fn new(tls: Option<TlsPem>, route: Route) -> Result<Dialer, EtcdError> {
        if let Some(tls) = &tls {
            tls.validate()?;
        }
        Ok(Dialer {
            tls,
            route,
            forwards: tokio::sync::Mutex::new(HashMap::new()),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
        })
    }

    /// A client bound to exactly this URL; `timeout` bounds every request (`None` for
    /// long streams such as snapshots). Connecting is lazy: errors show up on first use.
    pub async fn client(&self, url: &str, timeout: Option<Duration>) -> Result<Client, EtcdError> {
        let parts = split_url(url).map_err(|detail| EtcdError::Unreachable {
            endpoints: url.to_string(),
            detail,
        })?;
        let scheme = if parts.https { "https" } else { "http" };
        let (dial_url, server_name) = match &self.route {
            Route::Direct => (format!("{scheme}://{}", host_port(&parts.host, parts.port)), None),
            Route::Ssh(conn) => {
                let fwd = self.forward(conn, &parts.host, parts.port).await?;
                (
                    format!("{scheme}://127.0.0.1:{}", fwd.local_port),
                    Some(parts.host.clone()),
                )
            }
        };
        let mut options = ConnectOptions::new().with_connect_timeout(self.connect_timeout);
        if let Some(t) = timeout {
            options = options.with_timeout(t);
        }
        if parts.https {
            let mut tls_opts = TlsOptions::new();
            if let Some(tls) = &self.tls {
                tls_opts = tls_opts
                    .ca_certificate(Certificate::from_pem(&tls.ca))
                    .identity(Identity::from_pem(&tls.cert, &tls.key));
            }
            if let Some(name) = server_name {
                tls_opts = tls_opts.domain_name(name);
            }
            options = options.with_tls(tls_opts);
        }
        Client::connect([dial_url.as_str()], Some(options))
            .await
            .map_err(|e| EtcdError::Unreachable {
                endpoints: url.to_string(),
                detail: describe(&e),
            })
    }

    async fn forward(
        &self,
        conn: &Arc<dyn Connection>,
        host: &str,
        port: u16,
    ) -> Result<Arc<Forward>, EtcdError> {
        let mut forwards = self.forwards.lock().await;
        if let Some(f) = forwards.get(&(host.to_string(), port)) {
            return Ok(f.clone());
        }
        let f = Arc::new(Forward::start(conn.clone(), host, port).await?);
        forwards.insert((host.to_string(), port), f.clone());
        Ok(f)
    }

    /// Does anything accept TCP connections at this URL (as the route sees it)?
    pub async fn answers_tcp(&self, url: &str) -> bool {
        let Ok(parts) = split_url(url) else { return false };
        let wait = Duration::from_secs(2);
        match &self.route {
            Route::Direct => matches!(
                tokio::time::timeout(
                    wait,
                    tokio::net::TcpStream::connect(host_port(&parts.host, parts.port))
                )
                .await,
                Ok(Ok(_))
            ),
            Route::Ssh(conn) => {
                matches!(
                    tokio::time::timeout(wait, conn.tunnel(&parts.host, parts.port)).await,
                    Ok(Ok(_))
                )
            }
        }
    }

    /// Status of one member, asked at its own client URL.
    pub async fn status_of(&self, url: &str) -> Result<EndpointStatus, EtcdError> {
        let mut client = self.client(url, Some(self.request_timeout)).await?;
        let st = bounded(self.request_timeout, url, "status", client.status()).await?;
        Ok(EndpointStatus {
            endpoint: url.to_string(),
            member_id: hex_id(st.header().map(|h| h.member_id()).unwrap_or(0)),
            cluster_id: hex_id(st.header().map(|h| h.cluster_id()).unwrap_or(0)),
            version: st.version().to_string(),
            db_size: st.db_size(),
            leader: hex_id(st.leader()),
            raft_index: st.raft_index(),
            raft_term: st.raft_term(),
            raft_applied_index: st.raft_applied_index(),
            is_learner: st.is_learner(),
            errors: st.errors().to_vec(),
        })
    }

    /// Read a key at one member; `serializable` answers from that member's own copy
    /// (proves the data reached it), otherwise the read needs the quorum.
    pub async fn get_from(
        &self,
        url: &str,
        key: &str,
        serializable: bool,
    ) -> Result<Option<Vec<u8>>, EtcdError> {
        let mut client = self.client(url, Some(self.request_timeout)).await?;
        let opts = if serializable {
            Some(GetOptions::new().with_serializable())
        } else {
            None
        };
        let resp = bounded(self.request_timeout, url, "get", client.get(key, opts)).await?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

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
    fn from_etcd(m: &etcd_client::Member) -> MemberInfo {
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
        let client = self.client.clone();
        let id = member.id;
        let res = retrying(
            patience,
            |e| e.is_learner_not_ready() || e.is_unhealthy_cluster(),
            || {
                let mut c = client.clone();
                let this = &*self;
                async move {
                    c.member_promote(id)
                        .await
                        .map(|r| r.members().iter().map(MemberInfo::from_etcd).collect::<Vec<_>>())
                        .map_err(|e| this.req("member promote", e))
                }
            },
        )
        .await;
        match res {
            Ok(list) => Ok(list),
            Err(e) if e.is_learner_not_ready() => Err(EtcdError::NotInSync {
                name: member.label(),
                waited: human(patience),
            }),
            Err(e) => {
                // A retry after a lost answer: already voting counts as done.
                let (_, list) = self.members().await?;
                if list.iter().any(|m| m.id == id && !m.is_learner) {
                    return Ok(list);
                }
                Err(self.unhealthy_cluster_exhausted(e, patience))
            }
        }
    }

    /// Remove a member by ID; one that is already gone counts as removed.
    pub async fn remove(
        &mut self,
        member: &MemberInfo,
        patience: Duration,
    ) -> Result<Vec<MemberInfo>, EtcdError> {
        let client = self.client.clone();
        let id = member.id;
        let res = retrying(patience, EtcdError::is_unhealthy_cluster, || {
            let mut c = client.clone();
            let this = &*self;
            async move {
                c.member_remove(id)
                    .await
                    .map(|r| r.members().iter().map(MemberInfo::from_etcd).collect::<Vec<_>>())
                    .map_err(|e| this.req("member remove", e))
            }
        })
        .await;
        match res {
            Ok(list) => Ok(list),
            Err(e) => {
                let (_, list) = self.members().await?;
                if !list.iter().any(|m| m.id == id) {
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

/// Await `fut` for at most `limit`, turning both a timeout and an etcd error into an
/// [`EtcdError::Request`] about `endpoint`.
async fn bounded<T>(
    limit: Duration,
    endpoint: &str,
    op: &str,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            let unreachable = matches!(e, etcd_client::Error::TransportError(_))
                || matches!(&e, etcd_client::Error::GRpcStatus(s) if format!("{:?}", s.code()) == "Unavailable");
            let detail = describe(&e);
            if unreachable {
                Err(EtcdError::Unreachable {
                    endpoints: endpoint.to_string(),
                    detail,
                })
            } else {
                Err(EtcdError::Request {
                    op: op.to_string(),
                    endpoint: endpoint.to_string(),
                    detail,
                })
            }
        }
        Err(_) => Err(EtcdError::Unreachable {
            endpoints: endpoint.to_string(),
            detail: format!("no answer to `{op}` within {}", human(limit)),
        }),
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

/// etcd's answer in words: the gRPC message without the `etcdserver: ` prefix, or the
/// transport failure with its causes.
pub fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let msg = s.message().trim_start_matches("etcdserver: ").to_string();
            let mut text = if msg.is_empty() {
                format!("{:?}", s.code())
            } else {
                msg
            };
            let mut source = std::error::Error::source(s);
            while let Some(cause) = source {
                let c = cause.to_string();
                if !text.contains(&c) {
                    text.push_str(": ");
                    text.push_str(&c);
                }
                source = cause.source();
            }
            text
        }
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                let c = cause.to_string();
                if !text.contains(&c) {
                    text.push_str(": ");
                    text.push_str(&c);
                }
                source = cause.source();
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        assert_eq!(
            split_url("https://10.1.1.201:2379").unwrap(),
            UrlParts {
                https: true,
                host: "10.1.1.201".into(),
                port: 2379
            }
        );
        assert_eq!(
            split_url("http://[::1]:22379/").unwrap(),
            UrlParts {
                https: false,
                host: "::1".into(),
                port: 22379
            }
        );
        assert_eq!(split_url("127.0.1.1").unwrap().port, 2379);
        assert!(split_url("https://:2379").is_err());
        assert!(split_url("https://h:99999").is_err());
    }

    #[test]
    fn versions_compare_by_major_minor() {
        assert!(version_key("3.4.23") >= (3, 4));
        assert!(version_key("3.3.27") < (3, 4));
        assert_eq!(version_key("garbage"), (0, 0));
    }
}
