//! The audit log as a hash chain: each record carries the SHA-256 of the one before, so an edited,
//! removed or reordered record breaks every hash after it and [`AuditChain::verify`] names the first.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::state::Millis;

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// When.
    pub at: Millis,
    /// Who (token name, agent, controller).
    pub actor: String,
    /// What it concerns (fdid, lease, host).
    pub target: String,
    /// What was done.
    pub action: String,
    /// State before (JSON text, or empty).
    pub before: String,
    /// State after (JSON text, or empty).
    pub after: String,
    /// Outcome: "ok" or the error.
    pub result: String,
    /// Hash of the previous record (hex), or 64 zeros for the first.
    pub prev_hash: String,
    /// Hash of this record's fields and `prev_hash` (hex).
    pub hash: String,
}

/// A broken chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// A record's content does not match its hash (edited).
    #[error("record {seq}: content does not match its hash (edited)")]
    Tampered {
        /// Sequence number.
        seq: u64,
    },
    /// A record does not point at its predecessor (removed, inserted or reordered).
    #[error(
        "record {seq}: does not follow record {expected_prev} (removed, inserted or reordered)"
    )]
    Broken {
        /// Sequence number.
        seq: u64,
        /// The sequence number it should follow.
        expected_prev: u64,
    },
    /// Sequence numbers skip or repeat.
    #[error("record at position {position} has seq {seq}")]
    Sequence {
        /// 1-based position.
        position: u64,
        /// Seq found there.
        seq: u64,
    },
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hash of a record's content. Fields are length-prefixed so no two different records collide by
/// shifting text between fields.
pub fn record_hash(r: &AuditRecord) -> String {
    let mut h = Sha256::new();
    h.update(r.seq.to_le_bytes());
    h.update(r.at.to_le_bytes());
    for field in [
        &r.actor,
        &r.target,
        &r.action,
        &r.before,
        &r.after,
        &r.result,
        &r.prev_hash,
    ] {
        h.update((field.len() as u64).to_le_bytes());
        h.update(field.as_bytes());
    }
    hex(&h.finalize())
}

/// What is recorded, before it is numbered and chained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditEntry<'a> {
    /// When.
    pub at: Millis,
    /// Who.
    pub actor: &'a str,
    /// What it concerns.
    pub target: &'a str,
    /// What was done.
    pub action: &'a str,
    /// State before.
    pub before: &'a str,
    /// State after.
    pub after: &'a str,
    /// Outcome.
    pub result: &'a str,
}

/// Builds the chain in memory (the store persists the records).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditChain {
    last_seq: u64,
    last_hash: String,
}

impl AuditChain {
    /// A chain continuing after `last` (or a new chain).
    pub fn resume(last: Option<&AuditRecord>) -> Self {
        match last {
            Some(r) => Self {
                last_seq: r.seq,
                last_hash: r.hash.clone(),
            },
            None => Self {
                last_seq: 0,
                last_hash: GENESIS.to_owned(),
            },
        }
    }

    /// Makes the next record from an entry.
    pub fn append(&mut self, entry: &AuditEntry<'_>) -> AuditRecord {
        let mut r = AuditRecord {
            seq: self.last_seq + 1,
            at: entry.at,
            actor: entry.actor.to_owned(),
            target: entry.target.to_owned(),
            action: entry.action.to_owned(),
            before: entry.before.to_owned(),
            after: entry.after.to_owned(),
            result: entry.result.to_owned(),
            prev_hash: if self.last_hash.is_empty() {
                GENESIS.to_owned()
            } else {
                self.last_hash.clone()
            },
            hash: String::new(),
        };
        r.hash = record_hash(&r);
        self.last_seq = r.seq;
        self.last_hash = r.hash.clone();
        r
    }

    /// Verifies a whole chain from its first record.
    ///
    /// # Errors
    /// The first [`AuditError`] found.
    pub fn verify<'a>(
        records: impl IntoIterator<Item = &'a AuditRecord>,
    ) -> Result<u64, AuditError> {
        let mut prev_hash = GENESIS.to_owned();
        let mut prev_seq = 0u64;
        for (i, r) in records.into_iter().enumerate() {
            let position = i as u64 + 1;
            if r.seq != position {
                return Err(AuditError::Sequence {
                    position,
                    seq: r.seq,
                });
            }
            if record_hash(r) != r.hash {
                return Err(AuditError::Tampered { seq: r.seq });
            }
            if r.prev_hash != prev_hash {
                return Err(AuditError::Broken {
                    seq: r.seq,
                    expected_prev: prev_seq,
                });
            }
            prev_hash = r.hash.clone();
            prev_seq = r.seq;
        }
        Ok(prev_seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditRecord> {
        let mut c = AuditChain::resume(None);
        (0..n)
            .map(|i| {
                c.append(&AuditEntry {
                    at: i,
                    actor: "admin",
                    target: "n1:0000:03:00.0",
                    action: "assign",
                    before: "available",
                    after: "lending",
                    result: "ok",
                })
            })
            .collect()
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(AuditChain::verify(&chain(5)), Ok(5));
    }

    #[test]
    fn edited_record_is_found() {
        let mut c = chain(5);
        c[2].actor = "mallory".into();
        assert_eq!(AuditChain::verify(&c), Err(AuditError::Tampered { seq: 3 }));
    }

    #[test]
    fn edited_record_with_recomputed_hash_breaks_the_next_link() {
        let mut c = chain(5);
        c[2].result = "denied".into();
        c[2].hash = record_hash(&c[2]);
        assert_eq!(
            AuditChain::verify(&c),
            Err(AuditError::Broken {
                seq: 4,
                expected_prev: 3
            })
        );
    }

    #[test]
    fn removed_record_is_found() {
        let mut c = chain(5);
        c.remove(1);
        assert_eq!(
            AuditChain::verify(&c),
            Err(AuditError::Sequence {
                position: 2,
                seq: 3
            })
        );
    }

    #[test]
    fn reordered_records_are_found() {
        let mut c = chain(5);
        c.swap(1, 2);
        assert_eq!(
            AuditChain::verify(&c),
            Err(AuditError::Sequence {
                position: 2,
                seq: 3
            })
        );
    }

    #[test]
    fn resumed_chain_continues() {
        let mut c = chain(3);
        let mut chain2 = AuditChain::resume(c.last());
        c.push(chain2.append(&AuditEntry {
            at: 9,
            actor: "agent",
            target: "n2",
            action: "heartbeat",
            before: "",
            after: "",
            result: "ok",
        }));
        assert_eq!(AuditChain::verify(&c), Ok(4));
    }
}
