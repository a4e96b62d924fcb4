//! Caller authentication by a per-agency bearer token (until mutual TLS replaces it). Only
//! SHA-256 hashes of tokens are stored; the token itself is never logged.

use std::{collections::HashMap, path::Path};

use henvis_domain::{AgencyId, Directory, PersonId, Sector};
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;

use crate::ApiError;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The calling agency.
    pub agency: AgencyId,
    /// Its sector, from the directory.
    pub sector: Sector,
    /// The person, when a contact person calls as themself.
    pub person: Option<PersonId>,
}

/// Token hashes → agencies.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    by_hash: HashMap<String, Caller>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    agency: Vec<Row>,
    #[serde(default)]
    person: Vec<Row>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    id: String,
    token_sha256: String,
}

/// The lowercase hex SHA-256 of a token, as stored in the credentials file.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Credentials {
    /// Loads a credentials file; every agency must be in the directory.
    pub fn load(path: &Path, dir: &Directory) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading credentials `{}`", path.display()))?;
        Self::parse(&text, dir).with_context(|| format!("credentials `{}`", path.display()))
    }

    /// Parses a credentials file: agencies, and contact persons acting as themselves.
    pub fn parse(text: &str, dir: &Directory) -> anyhow::Result<Self> {
        fn hash(id: &str, row: &Row) -> anyhow::Result<String> {
            if row.token_sha256.len() != 64 || !row.token_sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                anyhow::bail!("`{id}`: token_sha256: expected 64 hex digits");
            }
            Ok(row.token_sha256.to_ascii_lowercase())
        }
        let file: File = toml::from_str(text)?;
        let mut by_hash = HashMap::new();
        for row in &file.agency {
            let agency = AgencyId::parse(&row.id)?;
            let entry = dir
                .agency(&agency)
                .ok_or_else(|| anyhow::anyhow!("agency `{agency}` is not in the directory"))?;
            by_hash.insert(
                hash(&row.id, row)?,
                Caller {
                    agency,
                    sector: entry.sector,
                    person: None,
                },
            );
        }
        for row in &file.person {
            let person = PersonId::parse(&row.id)?;
            let agency = dir
                .contact_person(&person)
                .ok_or_else(|| anyhow::anyhow!("person `{person}` is not a contact person in the directory"))?;
            by_hash.insert(
                hash(&row.id, row)?,
                Caller {
                    agency: agency.clone(),
                    sector: Sector::Police,
                    person: Some(person),
                },
            );
        }
        Ok(Self { by_hash })
    }

    /// Identifies the caller from the `authorization: Bearer <token>` metadata.
    pub fn authenticate(&self, meta: &MetadataMap) -> Result<Caller, ApiError> {
        let header = meta
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthenticated(
                "missing `authorization: Bearer <token>` metadata",
            ))?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or(ApiError::Unauthenticated("`authorization`: expected `Bearer <token>`"))?;
        self.by_hash
            .get(&hash_token(token))
            .cloned()
            .ok_or(ApiError::Unauthenticated("unknown credential"))
    }
}

/// Writes `credentials.toml` and `tokens/<id>.token` (mode 0600) for every agency and
/// contact person of `dir`, with fresh random tokens. For local development and tests only.
/// Returns how many credentials were written.
pub fn dev_credentials(dir: &Directory, out: &Path) -> anyhow::Result<usize> {
    use std::fmt::Write as _;
    let tokens = out.join("tokens");
    std::fs::create_dir_all(&tokens)?;
    let mut file = String::from("# development credentials: SHA-256 of each bearer token\n");
    let mut issue = |table: &str, id: &str| -> anyhow::Result<()> {
        let token = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let path = tokens.join(format!("{id}.token"));
        std::fs::write(&path, &token)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        let _ = write!(
            file,
            "\n[[{table}]]\nid = \"{id}\"\ntoken_sha256 = \"{}\"\n",
            hash_token(&token)
        );
        Ok(())
    };
    let mut n = 0;
    for a in dir.agencies() {
        issue("agency", a.id.as_str())?;
        n += 1;
    }
    for (person, _) in dir.contact_persons() {
        issue("person", person.as_str())?;
        n += 1;
    }
    std::fs::write(out.join("credentials.toml"), file)?;
    Ok(n)
}
