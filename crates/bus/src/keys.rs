//! Per-case data keys (crypto-shredding). Every payload the broker keeps that carries a
//! child's data — a submitted envelope in IN and in its idempotency record, a delivery in
//! OUT, an alert's details — is sealed with its case's own key (ChaCha20-Poly1305). Case
//! keys are random, wrapped with the deployment's master key and kept in one bucket, keyed
//! by case id. Erasing a case replaces its key with a tombstone: every sealed byte of the
//! case, wherever it lies (streams, followers, backups of those streams), can no longer be
//! opened by anyone, while the audit, which holds ids and hashes only, still verifies.
//!
//! Each service caches unwrapped keys only while it watches the bucket for erasures, and a
//! case once seen erased is never cached again; the watch failing empties the cache.
//!
//! A sealed payload: `00 'h' 'v' 01`, the case id's length (one byte) and the case id, a
//! 12-byte nonce, the ciphertext with its tag. The header is the associated data, so a
//! payload cannot be moved to another case. The first byte, zero, is never the first byte
//! of a protobuf message, so a sealed payload is never mistaken for a plain one.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use ring::aead::{self, Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::{Bus, BusError, records::JsonBucket};

const MAGIC: [u8; 4] = [0, b'h', b'v', 1];
const KEY_LEN: usize = 32;

/// The deployment's master key, which wraps every case key. Kept outside NATS (a file
/// beside the service certificates); never logged.
#[derive(Clone)]
pub struct MasterKey(Arc<LessSafeKey>, Arc<ring::hmac::Key>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A master key from its hex form (64 hex digits, 32 bytes), surrounding white space
    /// ignored.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text.trim()).map_err(|_| "expected 64 hex digits".to_owned())?;
        if bytes.len() != KEY_LEN {
            return Err(format!(
                "expected 64 hex digits (32 bytes), found {} bytes",
                bytes.len()
            ));
        }
        // the linkage key (linkage.rs) is derived, so no second secret must be kept
        let derived = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes),
            b"henvis linkage key v1",
        );
        Ok(Self(
            Arc::new(aead_key(&bytes)?),
            Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref())),
        ))
    }

    /// The keyed token of `input` (linkage): hex of HMAC-SHA256 under a key derived from
    /// the master key, so nobody without it can test a guessed identity.
    pub(crate) fn token(&self, input: &str) -> String {
        hex::encode(ring::hmac::sign(&self.1, input.as_bytes()).as_ref())
    }
}

fn aead_key(bytes: &[u8]) -> Result<LessSafeKey, String> {
    UnboundKey::new(&CHACHA20_POLY1305, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| "not a ChaCha20-Poly1305 key".to_owned())
}

fn nonce() -> Result<[u8; NONCE_LEN], BusError> {
    let mut n = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut n)
        .map_err(|_| BusError::Other("no randomness for a nonce".into()))?;
    Ok(n)
}

/// What the case-key bucket holds per case: its wrapped key, or that it was erased.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum KeyRecord {
    /// The case's data key, sealed with the master key (nonce then ciphertext, hex).
    Wrapped { key_hex: String },
    /// The case's key was destroyed at this time (unix seconds): its data is gone.
    Erased { at_unix: i64 },
}

fn wrap_aad(case: &str) -> Vec<u8> {
    format!("henvis case key {case}").into_bytes()
}

/// A payload opened with its case's key.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The case the payload was sealed for.
    pub case_id: String,
    /// The plain bytes.
    pub plaintext: Vec<u8>,
}

/// The case id a sealed payload names, without opening it (None: not a sealed payload).
pub fn sealed_case(sealed: &[u8]) -> Option<&str> {
    let rest = sealed.strip_prefix(&MAGIC)?;
    let (&len, rest) = rest.split_first()?;
    std::str::from_utf8(rest.get(..usize::from(len))?).ok()
}

/// Case keys a connection keeps at most: the least recently used beyond it is read again
/// when needed, so a service's memory stays flat however many cases the broker holds.
pub const CACHED_CASE_KEYS: usize = 65_536;

struct Cache {
    keys: lru::LruCache<String, Arc<LessSafeKey>>,
    /// Cases seen erased: never cached again.
    erased: HashSet<String>,
}

impl Default for Cache {
    fn default() -> Self {
        Self {
            keys: lru::LruCache::new(
                std::num::NonZeroUsize::new(CACHED_CASE_KEYS).unwrap_or(std::num::NonZeroUsize::MIN),
            ),
            erased: HashSet::new(),
        }
    }
}

/// The keys of one connection.
pub(crate) struct Keyring {
    master: Option<MasterKey>,
    cache: Mutex<Cache>,
    /// True while the erasure watch runs: only then are keys cached.
    watching: AtomicBool,
    started: AtomicBool,
    /// Dropped with the keyring (the last clone of its connection): the erasure watch
    /// ends at once and lets the connection close.
    alive: tokio::sync::watch::Sender<()>,
}

impl Default for Keyring {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Keyring {
    pub(crate) fn new(master: Option<MasterKey>) -> Self {
        Self {
            master,
            cache: Mutex::default(),
            watching: AtomicBool::new(false),
            started: AtomicBool::new(false),
            alive: tokio::sync::watch::channel(()).0,
        }
    }

    fn cached(&self, case: &str) -> Option<Arc<LessSafeKey>> {
        if !self.watching.load(Ordering::SeqCst) {
            return None;
        }
        self.cache.lock().ok()?.keys.get(case).cloned()
    }

    fn remember(&self, case: &str, key: Arc<LessSafeKey>) {
        if !self.watching.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(mut c) = self.cache.lock()
            && !c.erased.contains(case)
        {
            c.keys.put(case.to_owned(), key);
        }
    }

    fn forget(&self, case: &str) {
        if let Ok(mut c) = self.cache.lock() {
            c.keys.pop(case);
            c.erased.insert(case.to_owned());
        }
    }

    fn known_erased(&self, case: &str) -> bool {
        self.cache.lock().is_ok_and(|c| c.erased.contains(case))
    }

    fn stop_caching(&self) {
        self.watching.store(false, Ordering::SeqCst);
        if let Ok(mut c) = self.cache.lock() {
            c.keys.clear();
        }
    }
}

impl Bus {
    /// This connection with `master` as its master key (the router's and the sector
    /// services'; the admin service erases keys without it).
    pub fn with_master_key(mut self, master: MasterKey) -> Self {
        self.keyring = Arc::new(Keyring::new(Some(master)));
        self
    }

    /// Whether this connection can seal and open case data.
    pub fn has_master_key(&self) -> bool {
        self.keyring.master.is_some()
    }

    async fn case_key_bucket(&self) -> Result<&JsonBucket, BusError> {
        self.case_keys
            .get_or_try_init(|| JsonBucket::open(&self.js, crate::BUCKET_CASE_KEYS))
            .await
    }

    pub(crate) fn master(&self) -> Result<&MasterKey, BusError> {
        self.keyring.master.as_ref().ok_or_else(|| {
            BusError::Other(
                "no case master key configured (HENVIS_CASE_MASTER_KEY_FILE, default <pki dir>/service/case-master.key)"
                    .into(),
            )
        })
    }

    /// Starts the erasure watch (of the notices `erased.<case>` that
    /// [`destroy_case_key`](Self::destroy_case_key) writes) once per connection. The task holds no clone of the
    /// connection's keyring, only a weak reference, and ends when the keyring is dropped:
    /// a stopped service's connection closes (and with it its pending inbox pulls).
    fn watch_erasures(&self) {
        if self.keyring.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let js = self.js.clone();
        let ring = Arc::downgrade(&self.keyring);
        let mut alive = self.keyring.alive.subscribe();
        tokio::spawn(async move {
            use futures::StreamExt;
            let keep = async {
                loop {
                    // only the erasure notices: a new case's key is not sent to every
                    // service (it was, once per case and service, when this watched every key)
                    if let Ok(store) = js.get_key_value(crate::BUCKET_CASE_KEYS).await
                        && let Ok(mut watch) = store.watch(format!("{ERASURE_NOTICE}>")).await
                    {
                        match ring.upgrade() {
                            Some(r) => r.watching.store(true, Ordering::SeqCst),
                            None => return,
                        }
                        while let Some(Ok(entry)) = watch.next().await {
                            let Some(r) = ring.upgrade() else { return };
                            if let Some(case) = entry.key.strip_prefix(ERASURE_NOTICE) {
                                r.forget(case);
                            }
                        }
                    }
                    match ring.upgrade() {
                        Some(r) => r.stop_caching(),
                        None => return,
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            };
            tokio::select! {
                // the keyring (every clone of the connection) was dropped
                _ = alive.changed() => {}
                () = keep => {}
            }
        });
    }

    /// The data key of `case`: cached, read and unwrapped, or (with `create`) made, wrapped
    /// and stored (one writer wins a race; the others read its key).
    async fn case_key(&self, case: &str, create: bool) -> Result<Arc<LessSafeKey>, BusError> {
        self.case_key_of(case, create, false).await
    }

    /// As [`case_key`](Self::case_key); `fresh`: the case id was just minted (a random id
    /// nobody has used), so its key is created without reading first (a create that finds
    /// a key falls back to reading it).
    async fn case_key_of(&self, case: &str, create: bool, fresh: bool) -> Result<Arc<LessSafeKey>, BusError> {
        self.watch_erasures();
        if let Some(k) = self.keyring.cached(case) {
            return Ok(k);
        }
        if self.keyring.known_erased(case) {
            return Err(BusError::Erased(case.to_owned()));
        }
        let master = self.master()?;
        let bucket = self.case_key_bucket().await?;
        for attempt in 0..3 {
            let stored = if fresh && create && attempt == 0 {
                None
            } else {
                bucket.get::<KeyRecord>(case).await?
            };
            match stored {
                Some(v) => {
                    let key = match v.record {
                        KeyRecord::Erased { .. } => {
                            self.keyring.forget(case);
                            return Err(BusError::Erased(case.to_owned()));
                        }
                        KeyRecord::Wrapped { key_hex } => Arc::new(unwrap(master, case, &key_hex)?),
                    };
                    self.keyring.remember(case, key.clone());
                    return Ok(key);
                }
                None if !create => return Err(BusError::Erased(case.to_owned())),
                None => {
                    let mut raw = [0u8; KEY_LEN];
                    SystemRandom::new()
                        .fill(&mut raw)
                        .map_err(|_| BusError::Other("no randomness for a case key".into()))?;
                    let record = KeyRecord::Wrapped {
                        key_hex: wrap(master, case, &raw)?,
                    };
                    if bucket.create_new(case, &record).await?.is_some() {
                        let key = Arc::new(aead_key(&raw).map_err(BusError::Other)?);
                        self.keyring.remember(case, key.clone());
                        return Ok(key);
                    }
                    // another writer made it first: read its key
                }
            }
        }
        Err(BusError::Unavailable(format!(
            "the key of case `{case}` could not be read"
        )))
    }

    /// Seals `plaintext` with `case`'s key, making the key on the case's first payload.
    /// Fails with [`BusError::Erased`] once the case was erased: its id is never used again.
    pub async fn seal(&self, case: &str, plaintext: &[u8]) -> Result<Bytes, BusError> {
        self.seal_with(case, plaintext, false).await
    }

    /// Seals the first payload of a case whose id this service has just minted: its key is
    /// created without a read first (one round trip less for every opening report).
    pub async fn seal_new_case(&self, case: &str, plaintext: &[u8]) -> Result<Bytes, BusError> {
        self.seal_with(case, plaintext, true).await
    }

    /// The length of `plaintext_len` bytes sealed for `case`.
    pub fn sealed_len(case: &str, plaintext_len: usize) -> usize {
        MAGIC.len() + 1 + case.len() + NONCE_LEN + plaintext_len + 16
    }

    async fn seal_with(&self, case: &str, plaintext: &[u8], fresh: bool) -> Result<Bytes, BusError> {
        let len = u8::try_from(case.len()).map_err(|_| BusError::Other("case id too long to seal".into()))?;
        let key = self.case_key_of(case, true, fresh).await?;
        let mut out = Vec::with_capacity(Self::sealed_len(case, plaintext.len()));
        out.extend_from_slice(&MAGIC);
        out.push(len);
        out.extend_from_slice(case.as_bytes());
        let header_len = out.len();
        let n = nonce()?;
        let mut body = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(n),
            Aad::from(&out[..header_len]),
            &mut body,
        )
        .map_err(|_| BusError::Other("sealing failed".into()))?;
        out.extend_from_slice(&n);
        out.extend_from_slice(&body);
        Ok(out.into())
    }

    /// Opens a payload sealed by [`Bus::seal`]. [`BusError::Erased`] when its case's key was
    /// destroyed; [`BusError::Other`] when it is not a sealed payload or was altered.
    pub async fn open(&self, sealed: &[u8]) -> Result<Opened, BusError> {
        let case = sealed_case(sealed)
            .ok_or_else(|| BusError::Other("stored payload is not sealed with a case key".into()))?
            .to_owned();
        let header_len = MAGIC.len() + 1 + case.len();
        let key = self.case_key(&case, false).await?;
        let (header, rest) = sealed.split_at(header_len);
        if rest.len() < NONCE_LEN + aead::MAX_TAG_LEN {
            return Err(BusError::Other("sealed payload truncated".into()));
        }
        let (n, body) = rest.split_at(NONCE_LEN);
        let n = Nonce::try_assume_unique_for_key(n).map_err(|_| BusError::Other("sealed payload nonce".into()))?;
        let mut body = body.to_vec();
        let plain = key
            .open_in_place(n, Aad::from(header), &mut body)
            .map_err(|_| BusError::Other(format!("a sealed payload of case `{case}` fails its check (altered)")))?;
        let plaintext = plain.to_vec();
        Ok(Opened {
            case_id: case,
            plaintext,
        })
    }

    /// Destroys `case`'s key: its record is purged from the bucket's stream, and a
    /// tombstone takes its place, so its data can never be opened again and its id never
    /// gets a new key (the bucket keeps one record per key and refuses a second: the
    /// tombstone is never replaced). Returns false when the case had been erased before.
    pub async fn destroy_case_key(&self, case: &str) -> Result<bool, BusError> {
        let bucket = self.case_key_bucket().await?;
        let erased = KeyRecord::Erased {
            at_unix: crate::unix_now(),
        };
        for _ in 0..3 {
            if let Some(v) = bucket.get::<KeyRecord>(case).await?
                && matches!(v.record, KeyRecord::Erased { .. })
            {
                return Ok(false);
            }
            // the notice first: every running service drops the key from its cache (and
            // never caches it again) before the key goes; an attempt stopped after it
            // finds it written and goes on
            bucket
                .create_if_absent(&format!("{ERASURE_NOTICE}{case}"), &erased)
                .await?;
            // a purge request to the stream (nothing else removes a key: the stream
            // refuses rollups and second records), then the tombstone in the emptied key
            bucket.remove(case).await?;
            if bucket.create_new(case, &erased).await?.is_some() {
                self.keyring.forget(case);
                return Ok(true);
            }
            // a service that had not seen the notice yet made a key in between: again
        }
        Err(BusError::Unavailable(format!(
            "the key of case `{case}` kept being made again while it was destroyed"
        )))
    }

    /// Every case whose key was destroyed.
    pub async fn erased_cases(&self) -> Result<std::collections::BTreeSet<String>, BusError> {
        Ok(self
            .latest_values::<KeyRecord>(crate::BUCKET_CASE_KEYS)
            .await?
            .into_iter()
            .filter(|(k, r)| !k.starts_with(ERASURE_NOTICE) && matches!(r, KeyRecord::Erased { .. }))
            .map(|(k, _)| k)
            .collect())
    }

    /// Whether `case`'s key was destroyed.
    pub async fn case_erased(&self, case: &str) -> Result<bool, BusError> {
        Ok(matches!(
            self.case_key_bucket().await?.get::<KeyRecord>(case).await?,
            Some(v) if matches!(v.record, KeyRecord::Erased { .. })
        ))
    }
}

/// The key prefix of erasure notices in the case-key bucket (`erased.<case id>`; a case id
/// is a UUID, never this).
const ERASURE_NOTICE: &str = "erased.";

fn wrap(master: &MasterKey, case: &str, raw: &[u8]) -> Result<String, BusError> {
    let n = nonce()?;
    let mut body = raw.to_vec();
    master
        .0
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(n), Aad::from(wrap_aad(case)), &mut body)
        .map_err(|_| BusError::Other("wrapping a case key failed".into()))?;
    let mut out = n.to_vec();
    out.extend_from_slice(&body);
    Ok(hex::encode(out))
}

fn unwrap(master: &MasterKey, case: &str, key_hex: &str) -> Result<LessSafeKey, BusError> {
    let bad = || BusError::Other(format!("the key of case `{case}` does not open with this master key"));
    let bytes = hex::decode(key_hex).map_err(|_| bad())?;
    if bytes.len() < NONCE_LEN {
        return Err(bad());
    }
    let (n, body) = bytes.split_at(NONCE_LEN);
    let n = Nonce::try_assume_unique_for_key(n).map_err(|_| bad())?;
    let mut body = body.to_vec();
    let raw = master
        .0
        .open_in_place(n, Aad::from(wrap_aad(case)), &mut body)
        .map_err(|_| bad())?;
    aead_key(raw).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_cache_keeps_the_most_recently_used_keys_and_no_more() {
        let ring = Keyring::new(None);
        ring.watching.store(true, Ordering::SeqCst);
        let key = Arc::new(aead_key(&[9u8; KEY_LEN]).unwrap());
        for i in 0..CACHED_CASE_KEYS + 100 {
            ring.remember(&format!("case-{i}"), key.clone());
            if i == CACHED_CASE_KEYS - 1 {
                // used again just before it would be the oldest: kept
                assert!(ring.cached("case-0").is_some());
            }
        }
        assert_eq!(ring.cache.lock().unwrap().keys.len(), CACHED_CASE_KEYS);
        assert!(ring.cached("case-0").is_some(), "recently used");
        assert!(
            ring.cached("case-1").is_none(),
            "least recently used, read again when needed"
        );
        assert!(ring.cached(&format!("case-{}", CACHED_CASE_KEYS + 99)).is_some());
    }

    #[test]
    fn a_wrapped_key_opens_only_with_its_master_and_case() {
        let m = MasterKey::from_hex(&"1a".repeat(32)).unwrap();
        let other = MasterKey::from_hex(&"2b".repeat(32)).unwrap();
        let raw = [7u8; KEY_LEN];
        let w = wrap(&m, "case-a", &raw).unwrap();
        assert!(unwrap(&m, "case-a", &w).is_ok());
        assert!(unwrap(&m, "case-b", &w).is_err(), "a key moved to another case");
        assert!(unwrap(&other, "case-a", &w).is_err(), "another master key");
    }

    #[test]
    fn master_keys_are_64_hex_digits() {
        assert!(MasterKey::from_hex("abcd").is_err());
        assert!(MasterKey::from_hex(&"zz".repeat(32)).is_err());
        assert!(MasterKey::from_hex(&format!(" {}\n", "ab".repeat(32))).is_ok());
    }

    #[test]
    fn a_sealed_payload_names_its_case_and_is_never_a_protobuf() {
        let mut p = MAGIC.to_vec();
        p.push(3);
        p.extend_from_slice(b"abc");
        assert_eq!(sealed_case(&p), Some("abc"));
        assert_eq!(sealed_case(b"\x0a\x03abc"), None);
    }
}
