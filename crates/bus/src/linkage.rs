//! Linkage tokens and proposed links in [`BUCKET_LINKAGE`](crate::BUCKET_LINKAGE), which only
//! the router reads and writes: tokens never leave the broker, and they go with their case.

use std::collections::{BTreeMap, BTreeSet};

use henvis_domain::linkage::{CaseLink, MatchKind};

use crate::{Bus, BusError, records::JsonBucket};

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct TokenCases {
    cases: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct CaseTokens {
    tokens: BTreeSet<String>,
}

/// The key saying the guardian index covers the cases from before it existed.
const GUARDIAN_INDEX_BUILT: &str = "index.guardians_built";
/// Key of the case bucket's stream sequence up to which an unfinished build has noted.
const GUARDIAN_INDEX_FROM: &str = "index.guardians_from";

/// A link record as read, with its revision for compare-and-set.
pub type VersionedLink = crate::Versioned<CaseLink>;

impl Bus {
    async fn linkage_bucket(&self) -> Result<&JsonBucket, BusError> {
        self.linkage
            .get_or_try_init(|| JsonBucket::open(&self.js, crate::BUCKET_LINKAGE))
            .await
    }

    /// Notes that `guardian` guards `case` (idempotent): the index a guardian's list of
    /// cases is read from, in the router-only linkage bucket under
    /// `guardian.<agency>.<case>` (ids only). The case record stays the truth: a reader
    /// checks each listed case's record, so an entry left by an ended guardianship or an
    /// erased case lists nothing.
    pub async fn index_guardian(&self, guardian: &henvis_domain::AgencyId, case: &str) -> Result<(), BusError> {
        self.linkage_bucket()
            .await?
            .put(
                &format!("guardian.{guardian}.{case}"),
                &serde_json::json!({ "guardian_of": case }),
            )
            .await
            .map(drop)
    }

    /// Whether every case's guardian has been noted once (see
    /// [`mark_guardian_index_built`](Self::mark_guardian_index_built)).
    pub async fn guardian_index_built(&self) -> Result<bool, BusError> {
        Ok(self
            .linkage_bucket()
            .await?
            .get::<serde_json::Value>(GUARDIAN_INDEX_BUILT)
            .await?
            .is_some())
    }

    /// Where an unfinished build of the index goes on: the case bucket's stream sequence
    /// (1 when none began).
    pub async fn guardian_index_from(&self) -> Result<u64, BusError> {
        Ok(self
            .linkage_bucket()
            .await?
            .get::<u64>(GUARDIAN_INDEX_FROM)
            .await?
            .map_or(1, |v| v.record))
    }

    /// Records that a build of the index has noted every case revision before `from`: a
    /// build stopped (its router stopped) goes on from there.
    pub async fn note_guardian_index_from(&self, from: u64) -> Result<(), BusError> {
        self.linkage_bucket()
            .await?
            .put(GUARDIAN_INDEX_FROM, &from)
            .await
            .map(drop)
    }

    /// Records that every case standing when the index began has been noted.
    pub async fn mark_guardian_index_built(&self) -> Result<(), BusError> {
        self.linkage_bucket()
            .await?
            .put(GUARDIAN_INDEX_BUILT, &serde_json::json!({ "at": crate::unix_now() }))
            .await
            .map(drop)
    }

    /// The cases ever noted for `guardian` (see [`index_guardian`](Self::index_guardian)).
    pub async fn guardian_index(&self, guardian: &henvis_domain::AgencyId) -> Result<Vec<String>, BusError> {
        let prefix = format!("guardian.{guardian}.");
        Ok(self
            .linkage_bucket()
            .await?
            .keys_under(&format!("{prefix}*"))
            .await?
            .into_iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
            .collect())
    }

    /// Records `case`'s keyed tokens of `inputs` (linkage.rs in the domain) and returns the
    /// other cases that gave one of them, with what matched. Idempotent.
    pub async fn index_linkage(
        &self,
        case: &str,
        inputs: &[(MatchKind, String)],
    ) -> Result<BTreeMap<String, BTreeSet<MatchKind>>, BusError> {
        let master = self.master()?;
        let tokens: Vec<(MatchKind, String)> = inputs.iter().map(|(k, i)| (*k, master.token(i))).collect();
        let bucket = self.linkage_bucket().await?;
        // the case's own list first: an erasure finds every token it must remove
        bucket
            .modify(
                &format!("case.{case}"),
                || Some(CaseTokens::default()),
                |t: &mut CaseTokens| {
                    let before = t.tokens.len();
                    t.tokens.extend(tokens.iter().map(|(_, x)| x.clone()));
                    t.tokens.len() != before
                },
            )
            .await?;
        // every token's record at once (one round trip's latency on the routing path)
        let seen = futures::future::try_join_all(tokens.iter().map(|(kind, token)| async move {
            let mut seen = BTreeSet::new();
            bucket
                .modify(
                    &format!("token.{token}"),
                    || Some(TokenCases::default()),
                    |t: &mut TokenCases| {
                        seen.clone_from(&t.cases);
                        t.cases.insert(case.to_owned())
                    },
                )
                .await?;
            Ok::<_, BusError>((*kind, seen))
        }))
        .await?;
        let mut others: BTreeMap<String, BTreeSet<MatchKind>> = BTreeMap::new();
        for (kind, cases) in seen {
            for other in cases.into_iter().filter(|c| c != case) {
                others.entry(other).or_default().insert(kind);
            }
        }
        Ok(others)
    }

    /// Removes every token of `case` and every link it is a side of (its erasure).
    pub async fn forget_linkage(&self, case: &str) -> Result<(), BusError> {
        let bucket = self.linkage_bucket().await?;
        let key = format!("case.{case}");
        if let Some(own) = bucket.get::<CaseTokens>(&key).await? {
            for token in &own.record.tokens {
                let k = format!("token.{token}");
                bucket
                    .modify(&k, || None, |t: &mut TokenCases| t.cases.remove(case))
                    .await?;
                if bucket
                    .get::<TokenCases>(&k)
                    .await?
                    .is_some_and(|t| t.record.cases.is_empty())
                {
                    bucket.purge(&k).await?;
                }
            }
            bucket.purge(&key).await?;
        }
        for link in self.links().await? {
            if link.other(case).is_some() {
                bucket.purge(&format!("link.{}", link.id)).await?;
            }
        }
        Ok(())
    }

    /// Stores a proposed link unless one exists for its pair; true when this call made it.
    pub async fn propose_link(&self, link: &CaseLink) -> Result<bool, BusError> {
        Ok(self
            .linkage_bucket()
            .await?
            .create_new(&format!("link.{}", link.id), link)
            .await?
            .is_some())
    }

    /// Every link record (one read of the bucket).
    pub async fn links(&self) -> Result<Vec<CaseLink>, BusError> {
        Ok(self
            .latest_values::<CaseLink>(crate::BUCKET_LINKAGE)
            .await?
            .into_iter()
            .filter(|(k, _)| k.starts_with("link."))
            .map(|(_, l)| l)
            .collect())
    }

    /// One link record.
    pub async fn link(&self, id: &str) -> Result<Option<VersionedLink>, BusError> {
        self.linkage_bucket().await?.get(&format!("link.{id}")).await
    }

    /// Replaces link `link` if still at `revision`; false when someone answered meanwhile.
    pub async fn update_link(&self, link: &CaseLink, revision: u64) -> Result<bool, BusError> {
        Ok(self
            .linkage_bucket()
            .await?
            .update(&format!("link.{}", link.id), link, revision)
            .await?
            .is_some())
    }
}
