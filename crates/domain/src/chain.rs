//! The audit's hash chain and its signed checkpoints, as pure data and one verifier.
//!
//! Every record of the AUDIT stream gets one link, in the stream's order: the link names
//! the record (its stream sequence, subject and SHA-256) and carries the hash of the link
//! before it, so deleting, inserting, editing, reordering or truncating records breaks the
//! chain at a place the verifier names. Checkpoints sign the chain's head and length with
//! Ed25519; someone who can rewrite the store can recompute links but not signatures, and a
//! verifier holding a checkpoint copied off the system can prove the audit it reads later
//! extends the one it saw (the consistency idea of Certificate Transparency).

use sha2::{Digest, Sha256};

/// The hash before the first link.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One link of the chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChainLink {
    /// Its position in the chain, from 1.
    pub index: u64,
    /// The audit record's stream sequence.
    pub audit_seq: u64,
    /// The audit record's subject.
    pub subject: String,
    /// SHA-256 of the audit record's payload, hex.
    pub record_sha256: String,
    /// The hash of the link before (GENESIS for the first).
    pub prev: String,
    /// This link's hash, over all of the above.
    pub hash: String,
}

impl ChainLink {
    /// The link after `prev` (None: the first) for a stored record.
    pub fn next(prev: Option<&ChainLink>, audit_seq: u64, subject: &str, payload: &[u8]) -> Self {
        let (index, prev) = prev.map_or((1, GENESIS.to_owned()), |p| (p.index + 1, p.hash.clone()));
        let record_sha256 = hex::encode(Sha256::digest(payload));
        let hash = link_hash(index, &prev, audit_seq, subject, &record_sha256);
        Self {
            index,
            audit_seq,
            subject: subject.to_owned(),
            record_sha256,
            prev,
            hash,
        }
    }
}

/// The hash of a link's contents.
pub fn link_hash(index: u64, prev: &str, audit_seq: u64, subject: &str, record_sha256: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"henvis-audit-link-v1\n");
    h.update(format!("{index}\n{prev}\n{audit_seq}\n{subject}\n{record_sha256}\n").as_bytes());
    hex::encode(h.finalize())
}

/// A signed statement: the chain had `index` links, the last one with hash `head`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// Links covered.
    pub index: u64,
    /// The audit sequence of the last covered record.
    pub audit_seq: u64,
    /// The last covered link's hash.
    pub head: String,
    /// When it was signed, unix seconds.
    pub at: i64,
    /// Which key signed it (hex of the public key's first 8 bytes).
    pub key_id: String,
    /// Ed25519 signature over [`Checkpoint::message`], hex.
    pub signature: String,
}

impl Checkpoint {
    /// The bytes a checkpoint's signature covers.
    pub fn message(index: u64, audit_seq: u64, head: &str, at: i64) -> Vec<u8> {
        format!("henvis-audit-checkpoint-v1\n{index}\n{audit_seq}\n{head}\n{at}\n").into_bytes()
    }
}

/// A stored audit record as the verifier reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Its stream sequence.
    pub seq: u64,
    /// When it was stored, unix seconds.
    pub at: i64,
    /// Its subject.
    pub subject: String,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// What the verifier found wrong first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// A link's hash, predecessor or position is not what the chain before it says.
    BrokenLink {
        /// The link's position.
        index: u64,
        /// The record's sequence.
        audit_seq: u64,
        /// What is wrong.
        what: &'static str,
    },
    /// The record a link names is gone.
    MissingRecord {
        /// The record's sequence.
        audit_seq: u64,
        /// The position of its link.
        index: u64,
    },
    /// A record differs from what its link says (edited or replaced).
    AlteredRecord {
        /// The record's sequence.
        audit_seq: u64,
        /// When it was stored.
        at: i64,
    },
    /// A record stands between chained records without a link (inserted), or records are
    /// out of the chain's order.
    UnchainedRecord {
        /// The record's sequence.
        audit_seq: u64,
        /// When it was stored.
        at: i64,
    },
    /// A checkpoint's signature does not verify (forged or altered).
    ForgedCheckpoint {
        /// Links it claims to cover.
        index: u64,
    },
    /// The chain is shorter than a checkpoint says (truncated), or its head differs.
    CheckpointMismatch {
        /// Links the checkpoint covers.
        index: u64,
        /// When it was signed.
        at: i64,
        /// Links present.
        present: u64,
    },
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Break::BrokenLink { index, audit_seq, what } => write!(
                f,
                "the chain breaks at link {index} (audit record {audit_seq}): {what}; records from there on may have been altered, removed or reordered"
            ),
            Break::MissingRecord { audit_seq, index } => write!(
                f,
                "audit record {audit_seq} (link {index}) is missing: it was deleted from the store"
            ),
            Break::AlteredRecord { audit_seq, at } => write!(
                f,
                "audit record {audit_seq} (stored at {at}) differs from what the chain recorded: it was edited or replaced"
            ),
            Break::UnchainedRecord { audit_seq, at } => write!(
                f,
                "audit record {audit_seq} (stored at {at}) is not where the chain has it: it was inserted or moved"
            ),
            Break::ForgedCheckpoint { index } => write!(
                f,
                "the checkpoint over {index} links does not carry a valid signature: it was forged or altered"
            ),
            Break::CheckpointMismatch { index, at, present } => write!(
                f,
                "the checkpoint signed at {at} covers {index} links, but the chain present does not extend it ({present} links, or another head): records were removed or rewritten after it"
            ),
        }
    }
}

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Audit records read.
    pub records: u64,
    /// Links read.
    pub links: u64,
    /// Records stored after the last link (not chained yet: the chainer follows behind).
    pub unchained_tail: u64,
    /// Checkpoints whose signature and head verified.
    pub checkpoints: u64,
    /// Links at the start whose records (or the links before them) expired under the
    /// audit's retention, as checkpoints signed before the retention horizon allow.
    pub expired: u64,
    /// The first thing wrong, if anything.
    pub first_break: Option<Break>,
}

/// Verifies records against links and checkpoints. `signature_valid(message, checkpoint)`
/// checks one checkpoint's signature; `trusted` are checkpoints held elsewhere (copied off
/// the system) that the chain must extend.
///
/// `expired_before` (unix seconds; 0: nothing expires) is the audit's retention horizon:
/// the oldest links and records may be gone, but only as far as checkpoints signed before
/// the horizon reach (checkpoints are kept for ever). A prefix removed further than that,
/// or a checkpoint younger than the horizon over links that are gone, is a break.
pub fn verify(
    records: &[StoredRecord],
    links: &[ChainLink],
    checkpoints: &[Checkpoint],
    trusted: &[Checkpoint],
    expired_before: i64,
    signature_valid: impl Fn(&[u8], &Checkpoint) -> bool,
) -> Verification {
    let mut v = Verification {
        records: records.len() as u64,
        links: links.len() as u64,
        unchained_tail: 0,
        checkpoints: 0,
        expired: 0,
        first_break: None,
    };
    let by_seq: std::collections::BTreeMap<u64, &StoredRecord> = records.iter().map(|r| (r.seq, r)).collect();
    // how far links may have expired: the newest checkpoint signed before the horizon
    let expirable = checkpoints
        .iter()
        .chain(trusted)
        .filter(|c| expired_before > 0 && c.at < expired_before)
        .map(|c| c.index)
        .max()
        .unwrap_or(0);
    let first_index = links.first().map_or(1, |l| l.index);
    if first_index > 1 {
        if first_index - 1 > expirable {
            v.first_break = Some(Break::BrokenLink {
                index: first_index,
                audit_seq: links.first().map_or(0, |l| l.audit_seq),
                what: "the links before it are gone, and no checkpoint old enough to have expired covers them",
            });
            return v;
        }
        v.expired = first_index - 1;
    }
    let first_record = by_seq.keys().next().copied().unwrap_or(u64::MAX);
    let mut prev: Option<&ChainLink> = None;
    let mut last_seq = 0;
    for l in links {
        let expected_index = prev.map_or(first_index, |p| p.index + 1);
        // the first link present names a predecessor that expired
        let expected_prev = prev.map_or(if first_index > 1 { l.prev.as_str() } else { GENESIS }, |p| {
            p.hash.as_str()
        });
        let what = if l.index != expected_index {
            Some("its position is not the next one")
        } else if l.prev != expected_prev {
            Some("it does not name the link before it")
        } else if l.hash != link_hash(l.index, &l.prev, l.audit_seq, &l.subject, &l.record_sha256) {
            Some("its hash does not match its contents")
        } else if l.audit_seq <= last_seq {
            Some("it names a record out of the stream's order")
        } else {
            None
        };
        if let Some(what) = what {
            v.first_break = Some(Break::BrokenLink {
                index: l.index,
                audit_seq: l.audit_seq,
                what,
            });
            return v;
        }
        // every record between the previous link's and this one's is unchained
        if let Some((_, r)) = by_seq.range(last_seq + 1..l.audit_seq).next() {
            v.first_break = Some(Break::UnchainedRecord {
                audit_seq: r.seq,
                at: r.at,
            });
            return v;
        }
        // the oldest records expire a moment before their links (a link is written after
        // its record): gone from the front of the stream, under an old enough checkpoint
        if l.index <= expirable && l.audit_seq < first_record && !by_seq.contains_key(&l.audit_seq) {
            v.expired += 1;
            last_seq = l.audit_seq;
            prev = Some(l);
            continue;
        }
        match by_seq.get(&l.audit_seq) {
            None => {
                v.first_break = Some(Break::MissingRecord {
                    audit_seq: l.audit_seq,
                    index: l.index,
                });
                return v;
            }
            Some(r) if r.subject != l.subject || hex::encode(Sha256::digest(&r.payload)) != l.record_sha256 => {
                v.first_break = Some(Break::AlteredRecord {
                    audit_seq: r.seq,
                    at: r.at,
                });
                return v;
            }
            Some(_) => {}
        }
        last_seq = l.audit_seq;
        prev = Some(l);
    }
    v.unchained_tail = by_seq.range(last_seq + 1..).count() as u64;
    for c in checkpoints.iter().chain(trusted) {
        if !signature_valid(&Checkpoint::message(c.index, c.audit_seq, &c.head, c.at), c) {
            v.first_break = Some(Break::ForgedCheckpoint { index: c.index });
            return v;
        }
        if c.index < first_index {
            // it covers links that are gone: only as old as the retention lets them be
            if c.at < expired_before {
                v.checkpoints += 1;
                continue;
            }
            v.first_break = Some(Break::CheckpointMismatch {
                index: c.index,
                at: c.at,
                present: links.len() as u64,
            });
            return v;
        }
        let covered = usize::try_from(c.index - first_index).ok().and_then(|i| links.get(i));
        if covered.is_none_or(|l| l.hash != c.head || l.audit_seq != c.audit_seq) {
            v.first_break = Some(Break::CheckpointMismatch {
                index: c.index,
                at: c.at,
                present: links.len() as u64,
            });
            return v;
        }
        v.checkpoints += 1;
    }
    v
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn chain(n: u64) -> (Vec<StoredRecord>, Vec<ChainLink>) {
        let mut records = Vec::new();
        let mut links: Vec<ChainLink> = Vec::new();
        for seq in 1..=n {
            let r = StoredRecord {
                seq,
                at: 1000 + seq as i64,
                subject: format!("henvis.audit.case.c{}.router", seq % 3),
                payload: format!("{{\"n\":{seq}}}").into_bytes(),
            };
            links.push(ChainLink::next(links.last(), seq, &r.subject, &r.payload));
            records.push(r);
        }
        (records, links)
    }

    fn checkpoint(links: &[ChainLink], i: usize) -> Checkpoint {
        Checkpoint {
            index: links[i].index,
            audit_seq: links[i].audit_seq,
            head: links[i].hash.clone(),
            at: 5,
            key_id: "k".into(),
            signature: "good".into(),
        }
    }

    fn ok(_: &[u8], c: &Checkpoint) -> bool {
        c.signature == "good"
    }

    #[test]
    fn an_intact_chain_verifies_and_each_kind_of_tampering_is_named() {
        let (records, links) = chain(20);
        let cps = [checkpoint(&links, 9), checkpoint(&links, 19)];
        let v = verify(&records, &links, &cps, &[], 0, ok);
        assert_eq!((v.first_break, v.checkpoints, v.unchained_tail), (None, 2, 0));

        let mut edited = records.clone();
        edited[4].payload = b"{\"n\":99}".to_vec();
        assert!(matches!(
            verify(&edited, &links, &cps, &[], 0, ok).first_break,
            Some(Break::AlteredRecord { audit_seq: 5, .. })
        ));
        let mut deleted = records.clone();
        deleted.remove(7);
        assert!(matches!(
            verify(&deleted, &links, &cps, &[], 0, ok).first_break,
            Some(Break::MissingRecord { audit_seq: 8, .. })
        ));
        // a record inserted between chained ones (the store renumbered)
        let mut inserted = records.clone();
        inserted.insert(
            3,
            StoredRecord {
                seq: 0,
                at: 0,
                subject: "x".into(),
                payload: vec![],
            },
        );
        for (i, r) in inserted.iter_mut().enumerate() {
            r.seq = i as u64 + 1;
        }
        assert!(verify(&inserted, &links, &cps, &[], 0, ok).first_break.is_some());
        // the chain rewritten after an edit: every link valid, the checkpoint is not
        let mut forged_records = records.clone();
        forged_records[2].payload = b"{\"n\":77}".to_vec();
        let mut forged_links: Vec<ChainLink> = Vec::new();
        for r in &forged_records {
            forged_links.push(ChainLink::next(forged_links.last(), r.seq, &r.subject, &r.payload));
        }
        assert!(matches!(
            verify(&forged_records, &forged_links, &cps, &[], 0, ok).first_break,
            Some(Break::CheckpointMismatch { index: 10, .. })
        ));
        // truncated: the newer checkpoint covers links that are gone
        assert!(matches!(
            verify(&records[..15], &links[..15], &cps, &[], 0, ok).first_break,
            Some(Break::CheckpointMismatch { index: 20, .. })
        ));
        // rolled back with the checkpoints, caught by one held off the system
        assert!(matches!(
            verify(&records[..15], &links[..15], &cps[..1], &cps[1..], 0, ok).first_break,
            Some(Break::CheckpointMismatch { index: 20, .. })
        ));
        let mut bad = cps.to_vec();
        bad[0].signature = "forged".into();
        assert!(matches!(
            verify(&records, &links, &bad, &[], 0, ok).first_break,
            Some(Break::ForgedCheckpoint { index: 10 })
        ));
        // records not chained yet are counted, not a break
        let v = verify(&records, &links[..18], &cps[..1], &[], 0, ok);
        assert_eq!((v.first_break, v.unchained_tail), (None, 2));
    }

    #[test]
    fn an_expired_prefix_verifies_only_as_far_as_old_checkpoints_reach() {
        let (records, links) = chain(30);
        // checkpoints over links 10 and 20 signed at 5 and 50, over 30 at 100
        let mut cps = vec![checkpoint(&links, 9), checkpoint(&links, 19), checkpoint(&links, 29)];
        cps[1].at = 50;
        cps[2].at = 100;
        // retention horizon at 60: everything up to link 20 may be gone; records expire
        // first, so links 12..=20 outlive records 1..=14
        let v = verify(&records[14..], &links[11..], &cps, &[], 60, ok);
        assert_eq!(
            (v.first_break.clone(), v.expired, v.checkpoints),
            (None, 14, 3),
            "{v:?}"
        );
        // nothing expires: the same state is a removal
        assert!(matches!(
            verify(&records[14..], &links[11..], &cps, &[], 0, ok).first_break,
            Some(Break::BrokenLink { index: 12, .. })
        ));
        // removed beyond the horizon: link 21 and on are younger than the newest old checkpoint
        assert!(matches!(
            verify(&records[22..], &links[22..], &cps, &[], 60, ok).first_break,
            Some(Break::BrokenLink { index: 23, .. })
        ));
        // a record missing after the expired front is still a deletion
        let mut gap = records[14..].to_vec();
        gap.remove(3);
        assert!(matches!(
            verify(&gap, &links[11..], &cps, &[], 60, ok).first_break,
            Some(Break::MissingRecord { audit_seq: 18, .. })
        ));
        // a young checkpoint over links that are gone
        let mut young = cps.clone();
        young[1].at = 70;
        assert!(matches!(
            verify(&records[14..], &links[11..], &young, &[], 60, ok).first_break,
            Some(Break::BrokenLink { index: 12, .. }) | Some(Break::CheckpointMismatch { .. })
        ));
        // a link edited after the expired front still breaks the chain
        let mut edited = links[11..].to_vec();
        edited[5].record_sha256 = "0".repeat(64);
        assert!(verify(&records[14..], &edited, &cps, &[], 60, ok).first_break.is_some());
    }
}
