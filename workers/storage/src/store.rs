//! On-disk store of one storage node: `shards/<sha256>` (bytes only: the name is the checksum),
//! `manifests/<object_id>.json`, and `quarantine/` for shards that failed their checksum.

use std::path::{Path, PathBuf};

use crate::erasure::{is_hex_id, sha256_hex, Manifest};

/// Errors of the local store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The id is not a 64-char hex SHA-256.
    #[error("invalid id {0:?}: expected 64 lowercase hex characters")]
    InvalidId(String),
    /// Bytes offered do not hash to the id they were offered under.
    #[error("shard content does not match its id: expected {expected}, got {got}")]
    ContentMismatch {
        /// The id claimed.
        expected: String,
        /// The hash of the bytes.
        got: String,
    },
    /// The shard is not held here.
    #[error("shard {0} not held")]
    NotFound(String),
    /// Bit rot: the file no longer hashes to its name. It has been quarantined.
    #[error("shard {id} failed its checksum (bit rot, got {got}); quarantined, not served")]
    Corrupt {
        /// Shard id.
        id: String,
        /// Hash of what was on disk.
        got: String,
    },
    /// Filesystem error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A manifest file could not be parsed.
    #[error("manifest {0}: {1}")]
    BadManifest(String, String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// A node's shards and manifests on disk.
#[derive(Clone, Debug)]
pub struct ShardStore {
    root: PathBuf,
}

impl ShardStore {
    /// Opens (creating) the store under `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        for sub in ["shards", "manifests", "quarantine"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(io(format!("create {}", p.display())))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    fn shard_path(&self, id: &str) -> Result<PathBuf, StoreError> {
        if !is_hex_id(id) {
            return Err(StoreError::InvalidId(id.to_string()));
        }
        Ok(self.root.join("shards").join(id))
    }

    /// Stores a shard after checking its bytes hash to `id`. Idempotent.
    pub fn put(&self, id: &str, data: &[u8]) -> Result<(), StoreError> {
        let path = self.shard_path(id)?;
        let got = sha256_hex(data);
        if got != id {
            return Err(StoreError::ContentMismatch {
                expected: id.to_string(),
                got,
            });
        }
        write_atomic(&path, data)
    }

    /// Reads a shard, verifying its checksum; a corrupt shard is moved to quarantine and refused.
    pub fn get(&self, id: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.shard_path(id)?;
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(id.to_string()))
            }
            Err(e) => return Err(io(format!("read {}", path.display()))(e)),
        };
        let got = sha256_hex(&data);
        if got != id {
            let q = self.root.join("quarantine").join(id);
            std::fs::rename(&path, &q).map_err(io(format!("quarantine {}", path.display())))?;
            tracing::warn!(shard = id, "bit rot detected; shard quarantined");
            return Err(StoreError::Corrupt {
                id: id.to_string(),
                got,
            });
        }
        Ok(data)
    }

    /// True if the shard file exists (not verified; `get` and `scrub` verify).
    pub fn has(&self, id: &str) -> bool {
        self.shard_path(id).map(|p| p.is_file()).unwrap_or(false)
    }

    /// Ids of all shards held.
    pub fn list(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.root.join("shards");
        let mut ids = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(io(format!("list {}", dir.display())))? {
            let e = e.map_err(io("list shards"))?;
            if let Some(name) = e.file_name().to_str() {
                if is_hex_id(name) {
                    ids.push(name.to_string());
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Verifies every shard; corrupt ones are quarantined. Returns the ids found corrupt.
    pub fn scrub(&self) -> Result<Vec<String>, StoreError> {
        let mut bad = Vec::new();
        for id in self.list()? {
            if let Err(StoreError::Corrupt { .. }) = self.get(&id) {
                bad.push(id);
            }
        }
        Ok(bad)
    }

    /// Stores an object manifest (validated).
    pub fn put_manifest(&self, manifest: &Manifest) -> Result<(), StoreError> {
        manifest
            .validate()
            .map_err(|e| StoreError::BadManifest(manifest.object_id.clone(), e.to_string()))?;
        if !is_hex_id(&manifest.object_id) {
            return Err(StoreError::InvalidId(manifest.object_id.clone()));
        }
        let path = self
            .root
            .join("manifests")
            .join(format!("{}.json", manifest.object_id));
        let json = serde_json::to_vec_pretty(manifest)
            .map_err(|e| StoreError::BadManifest(manifest.object_id.clone(), e.to_string()))?;
        write_atomic(&path, &json)
    }

    /// All valid manifests held (damaged files are skipped with a warning).
    pub fn manifests(&self) -> Result<Vec<Manifest>, StoreError> {
        let dir = self.root.join("manifests");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(io(format!("list {}", dir.display())))? {
            let path = e.map_err(io("list manifests"))?.path();
            if path.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(io(format!("read {}", path.display())))?;
            // A damaged manifest file must not stop the node from repairing every other object.
            match serde_json::from_slice::<Manifest>(&bytes) {
                Ok(m) if m.validate().is_ok() && is_hex_id(&m.object_id) => out.push(m),
                Ok(_) => tracing::warn!(path = %path.display(), "invalid manifest skipped"),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "unreadable manifest skipped: {e}")
                }
            }
        }
        out.sort_by(|a, b| a.object_id.cmp(&b.object_id));
        Ok(out)
    }

    /// Root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data).map_err(io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("rename {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::erasure::encode;

    #[test]
    fn put_get_verify_and_quarantine_bit_rot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShardStore::open(dir.path()).expect("open");
        let (manifest, shards) = encode(b"hello magnet storage").expect("encode");
        for (r, s) in manifest.shards.iter().zip(&shards) {
            store.put(&r.id, s).expect("put");
        }
        store.put_manifest(&manifest).expect("manifest");
        assert_eq!(store.manifests().expect("list"), vec![manifest.clone()]);
        // A damaged manifest file is skipped, not fatal.
        std::fs::write(
            dir.path().join("manifests").join("bad.json"),
            b"{\"object_id\": 1",
        )
        .expect("write");
        let mut short = manifest.clone();
        short.shards.truncate(2);
        let short_json = serde_json::to_vec(&short).expect("json");
        std::fs::write(dir.path().join("manifests").join("short.json"), short_json).expect("write");
        assert_eq!(store.manifests().expect("list"), vec![manifest.clone()]);
        assert_eq!(store.list().expect("list").len(), 6);
        let id = &manifest.shards[2].id;
        assert_eq!(&store.get(id).expect("get"), &shards[2]);
        // Wrong content under an id is refused.
        assert!(matches!(
            store.put(id, b"xx"),
            Err(StoreError::ContentMismatch { .. })
        ));
        // Path traversal is impossible: ids must be hex.
        assert!(matches!(
            store.get("../etc/passwd"),
            Err(StoreError::InvalidId(_))
        ));
        // Flip one bit on disk: detected, quarantined, not served.
        let path = dir.path().join("shards").join(id);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[0] ^= 0x10;
        std::fs::write(&path, &bytes).expect("write");
        assert_eq!(store.scrub().expect("scrub"), vec![id.clone()]);
        assert!(matches!(store.get(id), Err(StoreError::NotFound(_))));
        assert!(dir.path().join("quarantine").join(id).exists());
    }
}
