//! One authenticated SSH session on russh, and why it ended once it has.
//!
//! Why not a higher-level client: a session that dies must say why. A host that stops
//! answering (a frozen sshd, a dropped link) is found by SSH keepalives, and the user
//! must read "no answer from the host for 30s (keepalive)", not "the channel closed".
//! Only russh's [`Handler::disconnected`] learns that reason, so the handler is ours.
//! It also records the key the host offered, so a rejected host key is shown with its
//! fingerprint without a second handshake.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{DisconnectReason, Handle, Handler, Msg};
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{Channel, ChannelOpenFailure};
use tokio::sync::watch;

use super::ssh::SshAuth;

/// How a dead host is found: when nothing came from it for `interval`, a keepalive is
/// sent; after `count` intervals without any answer, the session is declared dead. So
/// a host that stops answering is given up after `interval × count` (the `bound`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub interval: Duration,
    pub count: u32,
}

impl Keepalive {
    /// 10 s × 3: a host that answers nothing for 30 s is unreachable.
    pub const DEFAULT: Keepalive = Keepalive {
        interval: Duration::from_secs(10),
        count: 3,
    };

    /// How long a host may answer nothing before it is given up.
    pub fn bound(&self) -> Duration {
        self.interval * self.count.max(1)
    }

    /// russh's settings for this bound: russh gives up at the tick after `max`
    /// unanswered keepalives (`(max + 1) × interval`), and `max = 0` turns the check
    /// off, so one interval becomes two half intervals.
    fn russh(&self) -> (Duration, usize) {
        match self.count {
            0 | 1 => (self.interval / 2, 1),
            n => (self.interval, n as usize - 1),
        }
    }
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive::DEFAULT
    }
}

/// Which host key to accept.
#[derive(Debug, Clone)]
pub enum KeyCheck {
    /// The key recorded for `address:port` in this known_hosts file.
    KnownHosts { path: PathBuf },
    /// Exactly this key (checked already, pinned for the real connection).
    Pinned(PublicKey),
    /// None: only learn which key the host offers (see `OpenError::Ssh::offered`).
    Reject,
    /// A host certificate (`@cert-authority` in known_hosts): of type host, naming
    /// `principal` (the address connected to, as OpenSSH checks it), valid now, signed
    /// by one of `authorities`, and neither it nor its signer `revoked`. A plain key
    /// offered instead is refused and recorded, like [`KeyCheck::Reject`].
    HostCertificate {
        authorities: Vec<PublicKey>,
        revoked: Vec<PublicKey>,
        principal: String,
    },
}

/// Why a host certificate is not accepted; `None` when it is.
fn certificate_refusal(
    cert: &russh::keys::Certificate,
    authorities: &[PublicKey],
    revoked: &[PublicKey],
    principal: &str,
) -> Option<String> {
    use russh::keys::HashAlg;
    use russh::keys::ssh_key::certificate::CertType;
    if cert.cert_type() != CertType::Host {
        return Some("it is a user certificate, not a host certificate".into());
    }
    if !cert.valid_principals().iter().any(|p| p == principal) {
        return Some(format!(
            "it is for {}, not {principal}",
            cert.valid_principals().join(", ")
        ));
    }
    let Some(ca) = authorities
        .iter()
        .find(|ca| ca.key_data() == cert.signature_key())
    else {
        return Some("no @cert-authority line trusts the key that signed it".into());
    };
    if revoked
        .iter()
        .any(|r| r.key_data() == cert.signature_key() || r.key_data() == cert.public_key())
    {
        return Some("it, or the authority that signed it, is @revoked".into());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match cert.validate_at(now, [&ca.fingerprint(HashAlg::Sha256)]) {
        Ok(()) => None,
        Err(e) => Some(format!("it does not validate: {e}")),
    }
}

/// Why the session ended, as the handler learnt it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The keepalive check gave up after this long without an answer.
    Keepalive(Duration),
    /// Anything else (the host closed the connection, a protocol error...).
    Other(String),
}

struct Checker {
    check: KeyCheck,
    address: String,
    port: u16,
    offered: Arc<Mutex<Option<PublicKey>>>,
    /// Why an offered host certificate was refused.
    refusal: Arc<Mutex<Option<String>>>,
    ended: watch::Sender<Option<Ended>>,
    keepalive: Keepalive,
}

impl Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(&mut self, offered: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let key = match offered {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(cert) => {
                let refusal = match &self.check {
                    KeyCheck::HostCertificate {
                        authorities,
                        revoked,
                        principal,
                    } => certificate_refusal(cert, authorities, revoked, principal),
                    _ => Some("troupe did not ask for a certificate".into()),
                };
                *self.offered.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(PublicKey::from(cert.public_key().clone()));
                *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = refusal.clone();
                return Ok(refusal.is_none());
            }
        };
        let key = &key;
        *self.offered.lock().unwrap_or_else(|p| p.into_inner()) = Some(key.clone());
        Ok(match &self.check {
            KeyCheck::KnownHosts { path } => {
                russh::keys::check_known_hosts_path(&self.address, self.port, key, path).unwrap_or(false)
            }
            KeyCheck::Pinned(pinned) => pinned == key,
            KeyCheck::Reject | KeyCheck::HostCertificate { .. } => false,
        })
    }

    async fn disconnected(&mut self, reason: DisconnectReason<Self::Error>) -> Result<(), Self::Error> {
        let (ended, result) = match reason {
            DisconnectReason::ReceivedDisconnect(info) => (
                Ended::Other(format!("the host closed the connection ({})", info.message)),
                Ok(()),
            ),
            DisconnectReason::Error(russh::Error::KeepaliveTimeout) => (
                Ended::Keepalive(self.keepalive.bound()),
                Err(russh::Error::KeepaliveTimeout),
            ),
            DisconnectReason::Error(e) => (Ended::Other(e.to_string()), Err(e)),
        };
        self.ended.send_replace(Some(ended));
        result
    }
}

/// Why a session could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The SSH layer failed; `offered` is the host key the host showed, if it got
    /// that far (a rejected key is `russh::Error::UnknownKey`).
    Ssh {
        error: Box<russh::Error>,
        offered: Option<PublicKey>,
        /// Why the host's certificate was refused, when it offered one.
        certificate_refused: Option<String>,
    },
    /// The address does not resolve.
    Address(String),
    /// Authentication failed; the text says how.
    Auth(String),
}

/// An open, authenticated session.
pub struct Session {
    handle: Handle<Checker>,
    ended: watch::Receiver<Option<Ended>>,
    slots: Arc<Slots>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

/// The russh client settings troupe uses everywhere.
pub fn config(keepalive: Keepalive) -> russh::client::Config {
    let (interval, max) = keepalive.russh();
    russh::client::Config {
        keepalive_interval: Some(interval),
        keepalive_max: max,
        nodelay: true,
        ..Default::default()
    }
}

impl Session {
    /// Handshake with `address:port` (through `via`, a jump host's session, when
    /// given), check its key against `check`, authenticate as `user`.
    // Each is a separate fact about the connection; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        address: &str,
        port: u16,
        via: Option<&Session>,
        check: KeyCheck,
        key_algorithms: &[russh::keys::Algorithm],
        keepalive: Keepalive,
        user: &str,
        auth: &SshAuth,
    ) -> Result<Session, OpenError> {
        let offered = Arc::new(Mutex::new(None));
        let refusal = Arc::new(Mutex::new(None));
        let wants_certificate = matches!(check, KeyCheck::HostCertificate { .. });
        let (tx, rx) = watch::channel(None);
        let handler = Checker {
            check,
            address: address.to_string(),
            port,
            offered: offered.clone(),
            refusal: refusal.clone(),
            ended: tx,
            keepalive,
        };
        let mut config = config(keepalive);
        config.preferred.key = std::borrow::Cow::Owned(key_algorithms.to_vec());
        if wants_certificate {
            // Certificates of the same key types, asked for ahead of plain keys.
            config.preferred.host_key_certificates = std::borrow::Cow::Owned(key_algorithms.to_vec());
        }
        let config = Arc::new(config);
        let ssh_err = |error: russh::Error| OpenError::Ssh {
            error: Box::new(error),
            offered: offered.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            certificate_refused: refusal.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        };
        let handle = match via {
            None => russh::client::connect(config, (address, port), handler)
                .await
                .map_err(ssh_err)?,
            Some(jump) => {
                // Resolved on the controller, like the direct case.
                let target = tokio::net::lookup_host((address, port))
                    .await
                    .map_err(|e| OpenError::Address(format!("{address}: {e}")))?
                    .next()
                    .ok_or_else(|| OpenError::Address(format!("{address} does not resolve")))?;
                let channel = jump
                    .handle
                    .channel_open_direct_tcpip(target.ip().to_string(), target.port().into(), "127.0.0.1", 22)
                    .await
                    .map_err(ssh_err)?;
                russh::client::connect_stream(config, channel.into_stream(), handler)
                    .await
                    .map_err(ssh_err)?
            }
        };
        let mut session = Session {
            handle,
            ended: rx,
            slots: Slots::new(),
        };
        session.authenticate(user, auth).await?;
        Ok(session)
    }

    async fn authenticate(&mut self, user: &str, auth: &SshAuth) -> Result<(), OpenError> {
        let ssh = |error| OpenError::Ssh {
            error: Box::new(error),
            offered: None,
            certificate_refused: None,
        };
        let hash = self
            .handle
            .best_supported_rsa_hash()
            .await
            .map_err(ssh)?
            .flatten();
        match auth {
            SshAuth::KeyFile(path) => {
                let key = russh::keys::load_secret_key(path, None)
                    .map_err(|e| OpenError::Auth(format!("cannot load key {}: {e}", path.display())))?;
                let ok = self
                    .handle
                    .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
                    .await
                    .map_err(ssh)?;
                if !ok.success() {
                    return Err(OpenError::Auth(format!(
                        "the server refused key {}",
                        path.display()
                    )));
                }
            }
            SshAuth::Agent => {
                let mut agent = russh::keys::agent::client::AgentClient::connect_env()
                    .await
                    .map_err(|_| OpenError::Auth("cannot reach the ssh-agent at $SSH_AUTH_SOCK".into()))?;
                let identities = agent
                    .request_identities()
                    .await
                    .map_err(|_| OpenError::Auth("the ssh-agent has no usable key".into()))?;
                if identities.is_empty() {
                    return Err(OpenError::Auth("the ssh-agent has no usable key".into()));
                }
                for identity in identities {
                    let result = self
                        .handle
                        .authenticate_publickey_with(
                            user,
                            identity.public_key().into_owned(),
                            hash,
                            &mut agent,
                        )
                        .await;
                    if result.is_ok_and(|r| r.success()) {
                        return Ok(());
                    }
                }
                return Err(OpenError::Auth("the server refused the ssh-agent's keys".into()));
            }
        }
        Ok(())
    }

    /// Open a session channel (for `exec`), counted in the connection's [`Slots`]:
    /// it waits while sshd's learnt `MaxSessions` is reached, and a refusal is
    /// reported as [`ChannelError::Refused`] (the caller decides whether to wait).
    pub async fn channel(&self) -> Result<(Channel<Msg>, Slot), ChannelError> {
        let slot = self.slots.take().await;
        match self.handle.channel_open_session().await {
            Ok(channel) => Ok((channel, slot)),
            Err(e) if is_session_refusal(&e) => Err(ChannelError::Refused(self.slots.refused(slot))),
            Err(e) => Err(ChannelError::Ssh(e)),
        }
    }

    /// The session channels this connection has open (see [`Slots`]).
    pub fn slots(&self) -> &Arc<Slots> {
        &self.slots
    }

    /// Open a `direct-tcpip` channel to `ip:port` as the host sees it.
    pub async fn direct_tcpip(&self, ip: std::net::IpAddr, port: u16) -> Result<Channel<Msg>, russh::Error> {
        self.handle
            .channel_open_direct_tcpip(ip.to_string(), port.into(), "127.0.0.1", 22)
            .await
    }

    pub async fn disconnect(&self) -> Result<(), russh::Error> {
        self.handle
            .disconnect(russh::Disconnect::ByApplication, "", "")
            .await
    }

    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Why the session ended, once it has. The handler learns it just after the
    /// session's channels start failing, so a caller that saw a failure waits a
    /// moment for it.
    pub async fn ended(&self) -> Option<Ended> {
        if let Some(e) = self.ended.borrow().clone() {
            return Some(e);
        }
        if !self.is_closed() {
            return None;
        }
        let mut rx = self.ended.clone();
        tokio::time::timeout(Duration::from_secs(1), rx.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(|r| r.ok().and_then(|v| v.clone()))
    }
}

/// Why [`Session::channel`] opened no channel.
#[derive(Debug)]
pub enum ChannelError {
    /// sshd refused another session (its `MaxSessions`).
    Refused(Refusal),
    Ssh(russh::Error),
}

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChannelError::Refused(_) => f.write_str("sshd refused another session (MaxSessions)"),
            ChannelError::Ssh(e) => e.fmt(f),
        }
    }
}

/// Whether a session channel's open failed because sshd refused another session (its
/// `MaxSessions`): OpenSSH answers "connect failed" ("open failed" in its log) when
/// `session_new` finds no free session, others "administratively prohibited" or
/// "resource shortage". A session channel connects nowhere, so none of these can mean
/// anything else for it.
pub fn is_session_refusal(e: &russh::Error) -> bool {
    matches!(
        e,
        russh::Error::ChannelOpenFailure(
            ChannelOpenFailure::ConnectFailed
                | ChannelOpenFailure::AdministrativelyProhibited
                | ChannelOpenFailure::ResourceShortage
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// russh gives up at the tick after `max` unanswered keepalives, and `max = 0`
    /// would turn the check off: the settings must give up after exactly the bound.
    #[test]
    fn keepalive_settings_give_up_after_interval_times_count() {
        for (interval, count) in [(1000, 1), (1000, 2), (1000, 3), (10_000, 3), (250, 7)] {
            let k = Keepalive {
                interval: Duration::from_millis(interval),
                count,
            };
            let (tick, max) = k.russh();
            assert!(max >= 1, "{k:?}: max 0 turns keepalives off");
            assert_eq!(tick * (max as u32 + 1), k.bound(), "{k:?}");
            assert_eq!(k.bound(), Duration::from_millis(interval) * count);
        }
    }
}

/// The session channels one connection has open, and how many sshd lets it have.
///
/// sshd's `MaxSessions` (10 by default, often lowered) caps the session channels of
/// one connection, and a refused open says only "open failed". A refusal while others
/// are open teaches the limit: later opens wait until one of ours closes instead of
/// failing. A refusal with none of ours open cannot be waited out.
#[derive(Debug)]
pub struct Slots {
    state: Mutex<SlotState>,
    freed: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct SlotState {
    open: usize,
    /// What sshd allowed when it refused: at most this many at once from now on.
    limit: Option<usize>,
}

/// One session channel counted in [`Slots`]; freed on drop.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut st = self.slots.state.lock().unwrap_or_else(|p| p.into_inner());
        st.open = st.open.saturating_sub(1);
        drop(st);
        self.slots.freed.send_modify(|n| *n += 1);
    }
}

/// What [`Slots::refused`] concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Others of ours are open (this many): wait for one to close, then retry.
    Wait { open: usize },
    /// None of ours is open: sshd allows no session at all.
    Never,
}

impl Slots {
    pub fn new() -> Arc<Slots> {
        Arc::new(Slots {
            state: Mutex::new(SlotState::default()),
            freed: watch::channel(0).0,
        })
    }

    /// The limit sshd showed, if it refused a session yet.
    pub fn limit(&self) -> Option<usize> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).limit
    }

    /// Whether an open now would exceed the limit sshd showed.
    pub fn full(&self) -> bool {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.limit.is_some_and(|l| st.open >= l)
    }

    /// Reserve a slot when the learnt limit allows one now.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.limit.is_some_and(|l| st.open >= l) {
            return None;
        }
        st.open += 1;
        Some(Slot { slots: self.clone() })
    }

    /// Reserve a slot, waiting while the learnt limit is reached.
    pub async fn take(self: &Arc<Self>) -> Slot {
        loop {
            let mut freed = self.freed.subscribe();
            if let Some(slot) = self.try_take() {
                return slot;
            }
            // A slot freed after `subscribe` wakes us at once; the timeout covers a
            // limit learnt too low (sshd counts a channel we closed a moment longer).
            let _ = tokio::time::timeout(Duration::from_secs(1), freed.changed()).await;
        }
    }

    /// sshd refused the channel `slot` was reserved for: learn from it.
    pub fn refused(&self, slot: Slot) -> Refusal {
        let open = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let others = st.open.saturating_sub(1);
            if others > 0 {
                st.limit = Some(st.limit.map_or(others, |l| l.min(others)));
            }
            others
        };
        drop(slot);
        if open == 0 {
            Refusal::Never
        } else {
            Refusal::Wait { open }
        }
    }

    /// Wait until a slot of ours is freed, or a moment (see [`Slots::take`]).
    pub async fn wait_freed(&self, since: &mut watch::Receiver<u64>) {
        let _ = tokio::time::timeout(Duration::from_secs(1), since.changed()).await;
    }

    /// A receiver of "a slot was freed", to subscribe before an attempt.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.freed.subscribe()
    }
}
