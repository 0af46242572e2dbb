//! etcd membership, health and backups on top of `etcd-client`, for the task modules
//! that grow, shrink and repair an etcd cluster (issue 6).
//!
//! It exists so that the modules speak in terms of etcd's *state* ("etcd03 was added
//! 2 min ago and never started") instead of raw gRPC text, and so that the dangerous
//! part — deciding whether a membership change is safe — is pure code
//! ([`membership`]) that unit tests drive with a fake view, apart from the I/O
//! ([`client`]) that builds that view from a live cluster.
//!
//! - [`dial`]: how to reach the client URLs (TLS, directly or through the task host's
//!   SSH connection), each request with a deadline.
//! - [`views`]: members, endpoint status and cluster health, as data.
//! - [`client`]: connect through the first member that answers, member list, health
//!   judged through it, add / promote / remove with etcd's transient refusals retried.
//! - [`membership`]: given the view and the desired member, decide what to do.
//! - [`snapshot`]: save a verified snapshot on the controller and keep the last N.
//! - [`journal`]: when troupe added which member, so a stuck join can say how long ago.
//! - [`wal`]: whose data a data dir holds (member and cluster ID), read from its WAL.

pub mod client;
pub mod dial;
pub mod journal;
pub mod membership;
pub mod snapshot;
pub mod tunnel;
pub mod views;
pub mod wal;

pub use client::Etcd;
pub use dial::{Dialer, Route, TlsPem};
pub use membership::{Decision, Goal, Want, decide};
pub use views::{ClusterHealth, EndpointStatus, MemberHealth, MemberInfo};

/// Everything that can go wrong talking to etcd or that etcd's state forbids. Each
/// variant describes the cluster, not the RPC that noticed it.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum EtcdError {
    #[error("no etcd endpoint answered ({endpoints}): {detail}")]
    #[diagnostic(
        code(troupe::etcd::unreachable),
        help(
            "check that etcd runs and listens on these client URLs; with via=\"ssh\" the URLs are as the task's host sees them, with via=\"direct\" as the controller sees them"
        )
    )]
    Unreachable { endpoints: String, detail: String },

    #[error("TLS material for etcd is unusable: {detail}")]
    #[diagnostic(
        code(troupe::etcd::tls),
        help(
            "ca, cert and key must be PEM files: the etcd CA, and a client certificate it signed with its key"
        )
    )]
    Tls { detail: String },

    #[error("cannot open a forwarded channel to {target} through {host}: {detail}")]
    #[diagnostic(
        code(troupe::etcd::tunnel),
        help("the host must be able to reach etcd's client URL itself; check `ssh HOST curl -k {target}`")
    )]
    Tunnel {
        host: String,
        target: String,
        detail: String,
    },

    #[error("etcd at {endpoint} refused `{op}`: {detail}")]
    #[diagnostic(code(troupe::etcd::request))]
    Request {
        op: String,
        endpoint: String,
        detail: String,
    },

    #[error("{name} ({id}) was added{since} and never started; its peer URL {peer_url} {peer_state}")]
    #[diagnostic(
        code(troupe::etcd::member_not_started),
        help(
            "start etcd on that node with --initial-cluster-state=existing and the initial-cluster registered by etcd-member, or remove the member: `etcdctl member remove {id}`"
        )
    )]
    NotStarted {
        name: String,
        id: String,
        since: String,
        peer_url: String,
        peer_state: String,
    },

    #[error("a previous change is unfinished: {detail}")]
    #[diagnostic(
        code(troupe::etcd::unfinished_change),
        help(
            "finish it first (start the pending member and promote it with etcd-member state=\"promoted\"), or remove it; etcd takes one membership change at a time"
        )
    )]
    Unfinished { detail: String },

    #[error("refusing to change membership: voting member {name} is unhealthy ({detail})")]
    #[diagnostic(
        code(troupe::etcd::member_unhealthy),
        help(
            "a change now could cost quorum; bring {name} back (its service, disk, network) or, if it is gone for good, remove it on purpose with playbooks/etcd-replace-member.kdl"
        )
    )]
    Unhealthy { name: String, detail: String },

    #[error("peer URL {peer_url} already belongs to member {other}, not {name}")]
    #[diagnostic(
        code(troupe::etcd::peer_url_taken),
        help("each member needs its own peer URL; check the inventory, or remove {other} first")
    )]
    PeerUrlTaken {
        peer_url: String,
        name: String,
        other: String,
    },

    #[error("member {name} already exists with peer URL {existing}, not {peer_url}")]
    #[diagnostic(
        code(troupe::etcd::name_taken),
        help(
            "to move a member to a new address, replace it (playbooks/etcd-replace-member.kdl); to keep it, fix the inventory"
        )
    )]
    NameTaken {
        name: String,
        existing: String,
        peer_url: String,
    },

    #[error("{name} is not a member of the cluster")]
    #[diagnostic(
        code(troupe::etcd::not_a_member),
        help("add it first with etcd-member state=\"present\", then start it, then promote it")
    )]
    NotAMember { name: String },

    #[error("learner {name} did not catch up with the leader within {waited}")]
    #[diagnostic(
        code(troupe::etcd::learner_not_in_sync),
        help("it may still be receiving a large snapshot; re-run later, or check its logs and disk")
    )]
    NotInSync { name: String, waited: String },

    #[error("refusing to remove {name}: it is the last member of the cluster")]
    #[diagnostic(
        code(troupe::etcd::last_member),
        help("removing the last member destroys the cluster; stop it instead")
    )]
    LastMember { name: String },

    #[error(
        "refusing to remove {name}: {healthy} healthy voting members would remain, {needed} are needed for quorum of {voting}"
    )]
    #[diagnostic(
        code(troupe::etcd::would_lose_quorum),
        help("bring the unhealthy members back first, then remove {name}")
    )]
    WouldLoseQuorum {
        name: String,
        healthy: usize,
        needed: usize,
        voting: usize,
    },

    #[error("the cluster kept answering \"unhealthy cluster\" for {waited}: {detail}")]
    #[diagnostic(
        code(troupe::etcd::unhealthy_cluster),
        help(
            "etcd wants every member connected for 5 s before a membership change; check that all members are up and reach each other on their peer URLs"
        )
    )]
    ClusterNotReady { waited: String, detail: String },

    #[error("not every member became healthy within {waited}: {detail}")]
    #[diagnostic(
        code(troupe::etcd::health_timeout),
        help("look at the named member's service status and logs (journalctl, `sv status`, kubelet)")
    )]
    HealthTimeout { waited: String, detail: String },

    #[error("snapshot {path}: {detail}")]
    #[diagnostic(
        code(troupe::etcd::snapshot),
        help("check free space and permissions of the destination, and that the member answers")
    )]
    Snapshot { path: String, detail: String },

    #[error("data dir {dir} on {host} holds {detail}")]
    #[diagnostic(
        code(troupe::etcd::foreign_data_dir),
        help(
            "etcd would start as another member or cluster; move it aside: `mv {dir} {dir}.removed-{date}` (or set move-aside=#true)"
        )
    )]
    ForeignDataDir {
        host: String,
        dir: String,
        detail: String,
        name: String,
        date: String,
    },
}

impl EtcdError {
    /// Transient "unhealthy cluster" answer of etcd's strict reconfiguration check.
    pub fn is_unhealthy_cluster(&self) -> bool {
        matches!(self, EtcdError::Request { detail, .. } if detail.contains("unhealthy cluster"))
    }

    /// "can only promote a learner member which is in sync with leader".
    pub fn is_learner_not_ready(&self) -> bool {
        matches!(self, EtcdError::Request { detail, .. } if detail.contains("in sync with leader"))
    }
}

/// "2 min ago", for messages about members added earlier.
pub fn ago(elapsed: std::time::Duration) -> String {
    let s = elapsed.as_secs();
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

/// A duration as a person reads it: "45s", "2m 30s".
pub fn human(d: std::time::Duration) -> String {
    humantime::format_duration(std::time::Duration::from_secs(d.as_secs().max(1))).to_string()
}
