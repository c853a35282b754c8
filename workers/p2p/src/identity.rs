//! Node identity: a secp256k1 key; `nodeId = "node-" + hex(SHA-256(compressed pubkey))[:16]`.

use std::path::Path;

use k256::ecdsa::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// The node id bound to a public key.
pub fn node_id(key: &VerifyingKey) -> String {
    let compressed = key.to_encoded_point(true);
    let digest = hex::encode(Sha256::digest(compressed.as_bytes()));
    format!("node-{}", &digest[..16])
}

/// Loads `<dir>/node_key.hex` or creates it (mode 0600) on first start.
pub fn load_or_create_key(dir: &Path) -> anyhow::Result<SigningKey> {
    use anyhow::Context;
    let path = dir.join("node_key.hex");
    if path.exists() {
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let bytes =
            hex::decode(text.trim()).with_context(|| format!("{} is not hex", path.display()))?;
        return SigningKey::from_slice(&bytes)
            .with_context(|| format!("{} is not a secp256k1 key", path.display()));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let key = SigningKey::random(&mut rand_core::OsRng);
    write_private(&path, hex::encode(key.to_bytes()).as_bytes())?;
    Ok(key)
}

/// Writes a secret file readable by the owner only.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_format_and_persisted_key_with_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load_or_create_key(dir.path()).expect("create");
        let b = load_or_create_key(dir.path()).expect("load");
        assert_eq!(a.to_bytes(), b.to_bytes());
        let id = node_id(a.verifying_key());
        assert!(id.starts_with("node-") && id.len() == 21, "{id}");
        let mode = std::fs::metadata(dir.path().join("node_key.hex"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let other = SigningKey::random(&mut rand_core::OsRng);
        assert_ne!(node_id(other.verifying_key()), id);
    }
}
