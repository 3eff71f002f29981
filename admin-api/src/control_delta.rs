//! Snapshot deltas on the control channel: what changed in the subscriptions between the
//! version a data plane holds and the live one, instead of the whole snapshot.
//!
//! A whole snapshot carries every subscription (about 250 bytes each), so with N data
//! planes one subscription created, suspended or re-keyed cost N whole transfers. A data
//! plane that holds the snapshot named by `after` asks with `delta=true`; when the control
//! plane still knows how it got from that version to the live one (it keeps the last
//! [`HISTORY_STEPS`] changes it built, in memory), it answers a [`ControlDelta`]: the
//! subscription entries added or changed, the ids removed, and the config text only when
//! the revision differs. The data plane applies it to its snapshot and checks the result
//! against the version exactly as it checks a whole snapshot, so a delta can only produce
//! the snapshot the control plane would have sent. Otherwise (a version the control plane
//! does not know, as after its restart; a change touching more than half of the
//! subscriptions) the answer is the whole snapshot, as for a data plane that does not ask
//! for deltas.

use crate::control::{ControlSnapshot, SubscriptionKeys, PROTOCOL};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use utoipa::ToSchema;

/// How many changes the control plane remembers.
pub(crate) const HISTORY_STEPS: usize = 64;

/// The `Content-Type` of a delta answer (a whole snapshot is `application/json`).
pub const DELTA_CONTENT_TYPE: &str = "application/vnd.tollgate.snapshot-delta+json";

/// The changes from the snapshot named `base` to the one named `version`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ControlDelta {
    /// The protocol version ([`PROTOCOL`]).
    pub protocol: u32,
    /// The version this delta makes.
    pub version: String,
    /// The version it applies to (the caller's `after`).
    pub base: String,
    /// The config revision of `version`.
    pub revision: u64,
    /// Hex SHA-256 of the config text of `version`.
    pub config_sha256: String,
    /// The config text, only when `revision` differs from the base's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_text: Option<String>,
    /// The installation secret (64 hex digits).
    pub installation_secret: String,
    /// Subscriptions added or changed, in id order.
    pub upserts: Vec<SubscriptionKeys>,
    /// Ids of subscriptions removed (or whose scope can no longer be read), in order.
    pub removed: Vec<String>,
    /// When the control plane built `version` (RFC 3339 UTC).
    pub issued_at: String,
}

impl std::fmt::Debug for ControlDelta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret, never the digests.
        f.debug_struct("ControlDelta")
            .field("version", &self.version)
            .field("base", &self.base)
            .field("revision", &self.revision)
            .field("upserts", &self.upserts.len())
            .field("removed", &self.removed.len())
            .finish_non_exhaustive()
    }
}

impl ControlDelta {
    /// The snapshot this delta makes of `base`, verified ([`ControlSnapshot::verify`]).
    pub fn apply(self, base: &ControlSnapshot) -> Result<ControlSnapshot, String> {
        if self.protocol != PROTOCOL {
            return Err(format!(
                "delta protocol {} (this build speaks {PROTOCOL})",
                self.protocol
            ));
        }
        if self.base != base.version {
            return Err(format!(
                "the delta applies to {}, this node holds {}",
                self.base, base.version
            ));
        }
        let config_text = match self.config_text {
            Some(text) => text,
            None => base.config_text.clone(),
        };
        let mut changes: BTreeMap<&str, Option<SubscriptionKeys>> = BTreeMap::new();
        for id in &self.removed {
            changes.insert(id, None);
        }
        for s in &self.upserts {
            changes.insert(&s.id, Some(s.clone()));
        }
        let subscriptions = merge(&base.subscriptions, &changes);
        let snap = ControlSnapshot {
            protocol: PROTOCOL,
            version: self.version,
            revision: self.revision,
            config_sha256: self.config_sha256,
            config_text,
            installation_secret: self.installation_secret,
            subscriptions,
            issued_at: self.issued_at,
        };
        snap.verify()?;
        Ok(snap)
    }
}

/// `old` (in id order) with `changes` applied (`None`: removed), in id order.
fn merge(
    old: &[SubscriptionKeys],
    changes: &BTreeMap<&str, Option<SubscriptionKeys>>,
) -> Vec<SubscriptionKeys> {
    let mut out = Vec::with_capacity(old.len() + changes.len());
    let mut pending = changes.iter().peekable();
    for s in old {
        while let Some((id, new)) = pending.next_if(|(id, _)| **id < s.id.as_str()) {
            debug_assert!(*id < s.id.as_str());
            out.extend(new.clone());
        }
        match pending.next_if(|(id, _)| **id == s.id.as_str()) {
            Some((_, new)) => out.extend(new.clone()),
            None => out.push(s.clone()),
        }
    }
    for (_, new) in pending {
        out.extend(new.clone());
    }
    out
}

/// One change the control plane built: from the snapshot named `from` to the one named
/// `to`.
#[derive(Debug)]
pub(crate) struct Step {
    from: String,
    to: String,
    revision: u64,
    upserts: Vec<SubscriptionKeys>,
    removed: Vec<String>,
}

impl Step {
    /// What changed from `old` to `new` (both with subscriptions in id order).
    pub(crate) fn between(old: &ControlSnapshot, new: &ControlSnapshot) -> Step {
        let (mut upserts, mut removed) = (Vec::new(), Vec::new());
        let (mut a, mut b) = (
            old.subscriptions.iter().peekable(),
            new.subscriptions.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.id == y.id => {
                    if x != y {
                        upserts.push((*y).clone());
                    }
                    a.next();
                    b.next();
                }
                (Some(x), Some(y)) if x.id < y.id => {
                    removed.push(x.id.clone());
                    a.next();
                }
                (_, Some(y)) => {
                    upserts.push((*y).clone());
                    b.next();
                }
                (Some(x), None) => {
                    removed.push(x.id.clone());
                    a.next();
                }
                (None, None) => break,
            }
        }
        Step {
            from: old.version.clone(),
            to: new.version.clone(),
            revision: old.revision,
            upserts,
            removed,
        }
    }

    fn size(&self) -> usize {
        self.upserts.len() + self.removed.len()
    }
}

/// The changes the control plane remembers, oldest first.
#[derive(Debug, Default)]
pub(crate) struct History {
    steps: VecDeque<Arc<Step>>,
}

impl History {
    /// Remember `step`, unless it touches more than half of the `subscriptions` now held
    /// (a delta through it would be no smaller than the snapshot: forget everything, so
    /// that every data plane behind it gets the whole snapshot).
    pub(crate) fn push(&mut self, step: Step, subscriptions: usize) {
        if step.size() * 2 > subscriptions.max(1) {
            self.steps.clear();
            return;
        }
        if self.steps.len() == HISTORY_STEPS {
            self.steps.pop_front();
        }
        self.steps.push_back(Arc::new(step));
    }

    /// The steps, for composing without the lock.
    pub(crate) fn steps(&self) -> Vec<Arc<Step>> {
        self.steps.iter().cloned().collect()
    }
}

/// The delta from `base` to `live`, when `steps` lead there from `base` and it is smaller
/// than half the snapshot; `None`: send the whole snapshot.
pub(crate) fn compose(
    steps: &[Arc<Step>],
    base: &str,
    live: &ControlSnapshot,
) -> Option<ControlDelta> {
    // The latest time the caller's version was left: versions name content, so one can
    // come back (a subscription suspended, then resumed).
    let start = steps.iter().rposition(|s| s.from == base)?;
    let base_revision = steps[start].revision;
    let mut changes: BTreeMap<&str, Option<&SubscriptionKeys>> = BTreeMap::new();
    let mut at = base;
    for s in &steps[start..] {
        if s.from != at {
            return None;
        }
        for id in &s.removed {
            changes.insert(id, None);
        }
        for u in &s.upserts {
            changes.insert(&u.id, Some(u));
        }
        at = &s.to;
    }
    if at != live.version || changes.len() * 2 > live.subscriptions.len().max(1) {
        return None;
    }
    let (mut upserts, mut removed) = (Vec::new(), Vec::new());
    for (id, change) in changes {
        match change {
            Some(u) => upserts.push(u.clone()),
            None => removed.push(id.to_owned()),
        }
    }
    Some(ControlDelta {
        protocol: PROTOCOL,
        version: live.version.clone(),
        base: base.to_owned(),
        revision: live.revision,
        config_sha256: live.config_sha256.clone(),
        config_text: (base_revision != live.revision).then(|| live.config_text.clone()),
        installation_secret: live.installation_secret.clone(),
        upserts,
        removed,
        issued_at: live.issued_at.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(id: &str, state: &str, digest: u8) -> SubscriptionKeys {
        SubscriptionKeys {
            id: id.into(),
            state: state.into(),
            scope: "all".into(),
            primary: format!("{digest:02x}").repeat(32),
            secondary: "00".repeat(32),
        }
    }

    fn snap(revision: u64, subs: Vec<SubscriptionKeys>) -> ControlSnapshot {
        ControlSnapshot::new(
            revision,
            format!("version: 1\n# {revision}\n"),
            &[7; 32],
            subs,
        )
    }

    fn many(n: usize) -> Vec<SubscriptionKeys> {
        (0..n)
            .map(|i| sub(&format!("s{i:03}"), "active", 1))
            .collect()
    }

    #[test]
    fn a_chain_of_changes_composes_into_one_delta_that_rebuilds_the_live_snapshot() {
        let v0 = snap(1, many(10));
        // A subscription suspended, one added (before the first id and after the last),
        // one removed, then the config changed.
        let mut subs = many(10);
        subs[3].state = "suspended".into();
        subs.insert(0, sub("a-first", "active", 2));
        subs.push(sub("z-last", "active", 3));
        let v1 = snap(1, subs.clone());
        subs.retain(|s| s.id != "s005");
        let v2 = snap(1, subs.clone());
        let v3 = snap(2, subs);
        let mut h = History::default();
        for (a, b) in [(&v0, &v1), (&v1, &v2), (&v2, &v3)] {
            h.push(Step::between(a, b), b.subscriptions.len());
        }
        let steps = h.steps();
        for (base, texts) in [(&v0, true), (&v1, true), (&v2, true)] {
            let d = compose(&steps, &base.version, &v3).expect("a delta");
            assert_eq!(d.config_text.is_some(), texts);
            let rebuilt = d.apply(base).expect("applies");
            assert_eq!(rebuilt, v3);
        }
        let d = compose(&steps, &v0.version, &v2).map(|_| ());
        assert_eq!(d, None, "the chain leads to v3, not v2");
        let d = compose(&steps[..2], &v0.version, &v2).expect("a delta");
        assert!(d.config_text.is_none(), "same revision: no text");
        assert_eq!(d.upserts.len(), 3);
        assert_eq!(d.removed, ["s005"]);
        assert_eq!(d.apply(&v0).unwrap(), v2);
        // Unknown base: the whole snapshot.
        assert!(compose(&steps, "9.0000000000000000", &v3).is_none());
    }

    #[test]
    fn a_version_that_comes_back_is_found_at_its_latest() {
        let a = snap(1, many(10));
        let mut subs = many(10);
        subs[0].state = "suspended".into();
        let b = snap(1, subs);
        let mut subs = many(10);
        subs[1].state = "cancelled".into();
        let c = snap(1, subs);
        let mut h = History::default();
        for (x, y) in [(&a, &b), (&b, &a), (&a, &c)] {
            h.push(Step::between(x, y), 10);
        }
        let d = compose(&h.steps(), &a.version, &c).unwrap();
        assert_eq!(d.upserts.len(), 1, "only the last leg: {d:?}");
        assert_eq!(d.apply(&a).unwrap(), c);
    }

    #[test]
    fn big_changes_and_tampering_fall_back_to_the_whole_snapshot() {
        let a = snap(1, many(10));
        let mut subs = many(10);
        for s in &mut subs[..6] {
            s.state = "suspended".into();
        }
        let b = snap(1, subs);
        let mut h = History::default();
        h.push(Step::between(&a, &b), 10);
        assert!(
            h.steps().is_empty(),
            "a step over half the subscriptions is not kept"
        );
        // Two small steps that add up to more than half: no delta either.
        let mut subs = many(10);
        for s in &mut subs[..3] {
            s.state = "suspended".into();
        }
        let c = snap(1, subs.clone());
        for s in &mut subs[3..6] {
            s.state = "suspended".into();
        }
        let d = snap(1, subs);
        h.push(Step::between(&a, &c), 10);
        h.push(Step::between(&c, &d), 10);
        assert!(compose(&h.steps(), &a.version, &d).is_none());
        let delta = compose(&h.steps(), &c.version, &d).unwrap();
        // Applied to another snapshot than its base, or tampered with: refused.
        assert!(delta.clone().apply(&a).unwrap_err().contains("applies to"));
        let mut bad = delta.clone();
        bad.upserts[0].state = "active".into();
        assert!(bad.apply(&c).unwrap_err().contains("version"));
        let mut bad = delta;
        bad.removed.push("s009".into());
        assert!(bad.apply(&c).is_err());
        // The history is bounded.
        let mut h = History::default();
        for _ in 0..HISTORY_STEPS + 5 {
            h.push(Step::between(&a, &c), 10);
        }
        assert_eq!(h.steps().len(), HISTORY_STEPS);
        // Its debug form holds no key material.
        let delta = compose(&h.steps(), &a.version, &c).unwrap();
        let dbg = format!("{delta:?}");
        assert!(!dbg.contains(&"01".repeat(32)) && !dbg.contains(&"07".repeat(32)));
    }
}
