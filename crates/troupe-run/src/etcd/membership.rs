//! The membership state machine: given the cluster as an existing member sees it and
//! the member the user wants (or wants gone), decide the one next step — or refuse,
//! saying what etcd's state is and why a change now would be unsafe.
//!
//! This is pure code on purpose: every rule about quorum and unfinished changes is
//! unit-tested here with a fake [`View`], apart from the I/O in [`super::client`].
//! The steps are idempotent by construction: the decision is derived from the member
//! list every time, so a re-run continues from wherever a previous run stopped
//! (added but never started, started as learner, promoted) instead of repeating a step.

use std::time::SystemTime;

use super::views::{MemberInfo, hex_id, same_url};
use super::{EtcdError, ago};

/// A member's health from the reference member's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Unhealthy(String),
    /// Listed but never started; `peer_answering` when that was probed.
    NotStarted {
        peer_answering: Option<bool>,
    },
}

#[derive(Debug, Clone)]
pub struct MemberView {
    pub info: MemberInfo,
    pub health: Health,
    /// When troupe added it and the name it was added for, if troupe did (see
    /// [`super::journal`]).
    pub added: Option<(SystemTime, String)>,
}

/// The cluster as one existing member reports it.
#[derive(Debug, Clone)]
pub struct View {
    pub members: Vec<MemberView>,
    /// Every member runs etcd ≥ 3.4 (learners and `member promote` exist).
    pub learner_support: bool,
}

/// Where the user wants the member to end up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// In the member list (added as a learner if it was absent); it may not be started
    /// yet: the playbook starts it next.
    Present,
    /// A started, voting member.
    Promoted,
    /// Not in the member list.
    Absent,
}

#[derive(Debug, Clone)]
pub struct Want {
    pub name: String,
    pub peer_url: String,
    pub goal: Goal,
    /// Add as a learner first (when the cluster supports learners).
    pub learner: bool,
}

/// The one next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do; the text says why ("etcd02 is a started voting member").
    Unchanged(String),
    /// `member add` with this peer URL.
    Add { learner: bool },
    /// Wait for the listed member to start; then promote it if it is a learner.
    AwaitStart { member: MemberInfo, then_promote: bool },
    /// `member promote` (retrying until it is in sync).
    Promote { member: MemberInfo },
    /// `member remove`.
    Remove { member: MemberInfo },
}

impl Decision {
    /// One line for `--check` and progress output.
    pub fn summary(&self, want: &Want) -> String {
        match self {
            Decision::Unchanged(why) => why.clone(),
            Decision::Add { learner: true } => format!("add {} ({}) as a learner", want.name, want.peer_url),
            Decision::Add { learner: false } => {
                format!(
                    "add {} ({}) as a voting member (no learner support)",
                    want.name, want.peer_url
                )
            }
            Decision::AwaitStart {
                then_promote: true, ..
            } => {
                format!("wait for learner {} to start, then promote it", want.name)
            }
            Decision::AwaitStart {
                then_promote: false, ..
            } => format!("wait for {} to start", want.name),
            Decision::Promote { .. } => format!("promote learner {} to a voting member", want.name),
            Decision::Remove { member } => {
                format!("remove member {} ({})", member.label(), hex_id(member.id))
            }
        }
    }
}

impl MemberView {
    fn voting(&self) -> bool {
        !self.info.is_learner
    }

    /// The "was added 2 min ago and never started" refusal for this member.
    pub fn not_started_error(&self, name_hint: &str, now: SystemTime) -> EtcdError {
        let peer_url = self.info.peer_urls.first().cloned().unwrap_or_default();
        let since = match self.added.as_ref().and_then(|(t, _)| now.duration_since(*t).ok()) {
            Some(d) => format!(" {}", ago(d)),
            None => String::new(),
        };
        let peer_state = match self.health {
            Health::NotStarted {
                peer_answering: Some(true),
            } => "accepts connections, but the member has not joined (look at its logs)".to_string(),
            Health::NotStarted {
                peer_answering: Some(false),
            } => "is not answering".to_string(),
            _ => "has not joined".to_string(),
        };
        let name = if !self.info.name.is_empty() {
            self.info.name.clone()
        } else if !name_hint.is_empty() {
            name_hint.to_string()
        } else if let Some((_, name)) = self.added.as_ref().filter(|(_, n)| !n.is_empty()) {
            name.clone()
        } else {
            "a member".to_string()
        };
        EtcdError::NotStarted {
            name,
            id: hex_id(self.info.id),
            since,
            peer_url,
            peer_state,
        }
    }
}

/// Decide the next step toward `want`, or refuse.
pub fn decide(view: &View, want: &Want, now: SystemTime) -> Result<Decision, EtcdError> {
    let by_peer = view
        .members
        .iter()
        .find(|m| m.info.peer_urls.iter().any(|p| same_url(p, &want.peer_url)));
    let by_name = view
        .members
        .iter()
        .find(|m| !m.info.name.is_empty() && m.info.name == want.name);

    // Identity checks: the peer URL and the name must point at the same member.
    if let Some(m) = by_peer
        && !m.info.name.is_empty()
        && m.info.name != want.name
    {
        return Err(EtcdError::PeerUrlTaken {
            peer_url: want.peer_url.clone(),
            name: want.name.clone(),
            other: m.info.name.clone(),
        });
    }
    if let Some(m) = by_name
        && by_peer.is_none()
    {
        if want.goal == Goal::Absent {
            // Removing by name is fine even if the inventory's URL drifted.
            return remove(view, m, want, now);
        }
        return Err(EtcdError::NameTaken {
            name: want.name.clone(),
            existing: m.info.peer_urls.join(","),
            peer_url: want.peer_url.clone(),
        });
    }
    let mine = by_peer;

    match (want.goal, mine) {
        (Goal::Absent, None) => Ok(Decision::Unchanged(format!("{} is not a member", want.name))),
        (Goal::Absent, Some(m)) => remove(view, m, want, now),
        (Goal::Present | Goal::Promoted, None) => {
            if want.goal == Goal::Promoted {
                return Err(EtcdError::NotAMember {
                    name: want.name.clone(),
                });
            }
            refuse_unfinished(view, None, now)?;
            refuse_unhealthy_voters(view, None)?;
            Ok(Decision::Add {
                learner: want.learner && view.learner_support,
            })
        }
        (Goal::Present, Some(m)) => {
            let what = match (m.info.started, m.info.is_learner) {
                (true, false) => "a started voting member",
                (true, true) => "a started learner",
                (false, true) => "listed as a learner, not started yet",
                (false, false) => "listed, not started yet",
            };
            Ok(Decision::Unchanged(format!("{} is {what}", want.name)))
        }
        (Goal::Promoted, Some(m)) => {
            if m.info.started && !m.info.is_learner {
                return Ok(Decision::Unchanged(format!(
                    "{} is a started voting member",
                    want.name
                )));
            }
            refuse_unfinished(view, Some(m.info.id), now)?;
            if !m.info.started {
                return Ok(Decision::AwaitStart {
                    member: m.info.clone(),
                    then_promote: m.info.is_learner,
                });
            }
            // Promoting raises the quorum size: every voting member must be healthy.
            refuse_unhealthy_voters(view, Some(m.info.id))?;
            Ok(Decision::Promote {
                member: m.info.clone(),
            })
        }
    }
}

fn remove(view: &View, m: &MemberView, want: &Want, now: SystemTime) -> Result<Decision, EtcdError> {
    if view.members.len() == 1 {
        return Err(EtcdError::LastMember {
            name: want.name.clone(),
        });
    }
    refuse_unfinished(view, Some(m.info.id), now)?;
    if m.voting() {
        // After the removal the quorum is computed over the remaining voters; the
        // healthy ones among them must still reach it.
        let remaining: Vec<&MemberView> = view
            .members
            .iter()
            .filter(|o| o.info.id != m.info.id && o.voting())
            .collect();
        let voting = remaining.len();
        let healthy = remaining.iter().filter(|o| o.health == Health::Healthy).count();
        let needed = voting / 2 + 1;
        if voting == 0 {
            return Err(EtcdError::LastMember {
                name: want.name.clone(),
            });
        }
        if healthy < needed {
            return Err(EtcdError::WouldLoseQuorum {
                name: want.name.clone(),
                healthy,
                needed,
                voting,
            });
        }
    }
    Ok(Decision::Remove {
        member: m.info.clone(),
    })
}

/// Another member that is added-but-unstarted, or a learner not yet promoted, means
/// a previous change is still in flight.
fn refuse_unfinished(view: &View, except: Option<u64>, now: SystemTime) -> Result<(), EtcdError> {
    for m in view.members.iter().filter(|m| Some(m.info.id) != except) {
        if !m.info.started {
            let inner = m.not_started_error("", now);
            return Err(EtcdError::Unfinished {
                detail: inner.to_string(),
            });
        }
        if m.info.is_learner {
            return Err(EtcdError::Unfinished {
                detail: format!("{} is a learner that was never promoted", m.info.label()),
            });
        }
    }
    Ok(())
}

fn refuse_unhealthy_voters(view: &View, except: Option<u64>) -> Result<(), EtcdError> {
    for m in view
        .members
        .iter()
        .filter(|m| Some(m.info.id) != except && m.voting())
    {
        if let Health::Unhealthy(detail) = &m.health {
            return Err(EtcdError::Unhealthy {
                name: m.info.label(),
                detail: detail.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn member(id: u64, name: &str, n: u8, learner: bool, started: bool) -> MemberInfo {
        MemberInfo {
            id,
            name: if started { name.to_string() } else { String::new() },
            peer_urls: vec![format!("https://10.1.1.20{n}:2380")],
            client_urls: if started {
                vec![format!("https://10.1.1.20{n}:2379")]
            } else {
                vec![]
            },
            is_learner: learner,
            started,
        }
    }

    fn healthy(info: MemberInfo) -> MemberView {
        let health = if info.started {
            Health::Healthy
        } else {
            Health::NotStarted {
                peer_answering: Some(false),
            }
        };
        MemberView {
            info,
            health,
            added: None,
        }
    }

    fn view(members: Vec<MemberView>) -> View {
        View {
            members,
            learner_support: true,
        }
    }

    fn want(name: &str, n: u8, goal: Goal) -> Want {
        Want {
            name: name.into(),
            peer_url: format!("https://10.1.1.20{n}:2380"),
            goal,
            learner: true,
        }
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn started_voting_member_is_unchanged() {
        let v = view(vec![healthy(member(1, "etcd01", 1, false, true))]);
        for goal in [Goal::Present, Goal::Promoted] {
            assert!(matches!(
                decide(&v, &want("etcd01", 1, goal), now()).unwrap(),
                Decision::Unchanged(_)
            ));
        }
    }

    #[test]
    fn absent_member_is_added_as_learner_or_voting_without_learner_support() {
        let mut v = view(vec![healthy(member(1, "etcd01", 1, false, true))]);
        assert_eq!(
            decide(&v, &want("etcd02", 2, Goal::Present), now()).unwrap(),
            Decision::Add { learner: true }
        );
        v.learner_support = false;
        assert_eq!(
            decide(&v, &want("etcd02", 2, Goal::Present), now()).unwrap(),
            Decision::Add { learner: false }
        );
        let mut w = want("etcd02", 2, Goal::Present);
        w.learner = false;
        v.learner_support = true;
        assert_eq!(decide(&v, &w, now()).unwrap(), Decision::Add { learner: false });
    }

    #[test]
    fn promoted_requires_present_first() {
        let v = view(vec![healthy(member(1, "etcd01", 1, false, true))]);
        let err = decide(&v, &want("etcd02", 2, Goal::Promoted), now()).unwrap_err();
        assert!(matches!(err, EtcdError::NotAMember { .. }), "{err}");
    }

    #[test]
    fn rerun_after_add_continues_instead_of_re_adding() {
        let added = member(2, "etcd02", 2, true, false);
        let v = view(vec![
            healthy(member(1, "etcd01", 1, false, true)),
            healthy(added.clone()),
        ]);
        // present: nothing to add again (never "Peer URLs already exists")
        assert!(matches!(
            decide(&v, &want("etcd02", 2, Goal::Present), now()).unwrap(),
            Decision::Unchanged(_)
        ));
        // promoted: wait for it to start, then promote
        assert_eq!(
            decide(&v, &want("etcd02", 2, Goal::Promoted), now()).unwrap(),
            Decision::AwaitStart {
                member: added,
                then_promote: true
            }
        );
    }

    #[test]
    fn started_learner_is_promoted() {
        let learner = member(2, "etcd02", 2, true, true);
        let v = view(vec![
            healthy(member(1, "etcd01", 1, false, true)),
            healthy(learner.clone()),
        ]);
        assert_eq!(
            decide(&v, &want("etcd02", 2, Goal::Promoted), now()).unwrap(),
            Decision::Promote { member: learner }
        );
    }

    #[test]
    fn another_unstarted_member_blocks_a_new_add_with_its_story() {
        let mut stuck = healthy(member(3, "", 3, true, false));
        stuck.added = Some((now() - Duration::from_secs(130), "etcd03".into()));
        let v = view(vec![healthy(member(1, "etcd01", 1, false, true)), stuck]);
        let err = decide(&v, &want("etcd04", 4, Goal::Present), now()).unwrap_err();
        assert!(matches!(err, EtcdError::Unfinished { .. }));
        assert_eq!(
            err.to_string(),
            "a previous change is unfinished: etcd03 (3) was added 2 min ago and never started; \
             its peer URL https://10.1.1.203:2380 is not answering"
        );
    }

    #[test]
    fn unpromoted_learner_blocks_a_new_add() {
        let v = view(vec![
            healthy(member(1, "etcd01", 1, false, true)),
            healthy(member(2, "etcd02", 2, true, true)),
        ]);
        let err = decide(&v, &want("etcd03", 3, Goal::Present), now()).unwrap_err();
        assert!(
            err.to_string()
                .contains("etcd02 is a learner that was never promoted"),
            "{err}"
        );
    }

    #[test]
    fn unhealthy_voter_blocks_add_and_promote() {
        let mut sick = healthy(member(2, "etcd02", 2, false, true));
        sick.health = Health::Unhealthy("its client URL https://10.1.1.202:2379 does not answer".into());
        let v = view(vec![healthy(member(1, "etcd01", 1, false, true)), sick.clone()]);
        let err = decide(&v, &want("etcd03", 3, Goal::Present), now()).unwrap_err();
        assert!(
            matches!(&err, EtcdError::Unhealthy { name, .. } if name == "etcd02"),
            "{err}"
        );

        let v = view(vec![
            healthy(member(1, "etcd01", 1, false, true)),
            sick,
            healthy(member(3, "etcd03", 3, true, true)),
        ]);
        let err = decide(&v, &want("etcd03", 3, Goal::Promoted), now()).unwrap_err();
        assert!(matches!(err, EtcdError::Unhealthy { .. }));
    }

    #[test]
    fn peer_url_taken_by_another_name_is_refused() {
        let v = view(vec![healthy(member(1, "etcd01", 1, false, true))]);
        let err = decide(&v, &want("etcd02", 1, Goal::Present), now()).unwrap_err();
        assert!(matches!(err, EtcdError::PeerUrlTaken { .. }), "{err}");
        let err = decide(&v, &want("etcd01", 5, Goal::Present), now()).unwrap_err();
        assert!(matches!(err, EtcdError::NameTaken { .. }), "{err}");
    }

    #[test]
    fn removal_keeps_quorum_and_the_last_member() {
        let one = view(vec![healthy(member(1, "etcd01", 1, false, true))]);
        assert!(matches!(
            decide(&one, &want("etcd01", 1, Goal::Absent), now()).unwrap_err(),
            EtcdError::LastMember { .. }
        ));

        let three = || {
            vec![
                healthy(member(1, "etcd01", 1, false, true)),
                healthy(member(2, "etcd02", 2, false, true)),
                healthy(member(3, "etcd03", 3, false, true)),
            ]
        };
        let v = view(three());
        assert!(matches!(
            decide(&v, &want("etcd03", 3, Goal::Absent), now()).unwrap(),
            Decision::Remove { .. }
        ));
        assert!(matches!(
            decide(&v, &want("etcd09", 9, Goal::Absent), now()).unwrap(),
            Decision::Unchanged(_)
        ));

        // 3 voters, etcd02 dead: removing dead etcd02 leaves 2 healthy of 2 → fine;
        // removing healthy etcd03 leaves 1 healthy of 2 (needs 2) → refused.
        let mut members = three();
        members[1].health = Health::Unhealthy("down".into());
        let v = view(members);
        assert!(matches!(
            decide(&v, &want("etcd02", 2, Goal::Absent), now()).unwrap(),
            Decision::Remove { .. }
        ));
        let err = decide(&v, &want("etcd03", 3, Goal::Absent), now()).unwrap_err();
        assert!(
            matches!(
                err,
                EtcdError::WouldLoseQuorum {
                    healthy: 1,
                    needed: 2,
                    voting: 2,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn an_unstarted_member_can_be_removed() {
        let stuck = member(2, "", 2, true, false);
        let v = view(vec![
            healthy(member(1, "etcd01", 1, false, true)),
            healthy(stuck.clone()),
        ]);
        assert_eq!(
            decide(&v, &want("etcd02", 2, Goal::Absent), now()).unwrap(),
            Decision::Remove { member: stuck }
        );
    }
}
