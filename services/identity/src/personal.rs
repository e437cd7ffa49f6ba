//! Personal fields (an identity's name and external id) sealed with a key of that identity's own,
//! so that `Forget` can erase them everywhere by deleting one small file.
//!
//! A vector store keeps deleted data for a while: Qdrant's write-ahead log and its segments hold
//! old payloads until they are rolled over or vacuumed, and a server's snapshots and replicas
//! hold copies. The catalog therefore never stores a name in the clear: it stores it sealed
//! (ChaCha20-Poly1305) under a random 256-bit key kept in `DATA/keys/<identity>`, outside the
//! vector store. Forgetting an identity deletes its key file, and every sealed copy of its name,
//! wherever it lingers, is unreadable from then on (crypto-shredding).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chacha20poly1305::aead::{Aead, KeyInit, OsRng, rand_core::RngCore};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use crate::crops::is_plain_id;
use crate::error::{IdentityError, IdentityResult};

const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;

/// The per-identity keys, one file each.
#[derive(Debug)]
pub struct PersonalKeys {
    dir: PathBuf,
    cache: Mutex<HashMap<String, Key>>,
}

impl PersonalKeys {
    pub fn open(dir: impl Into<PathBuf>) -> IdentityResult<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(IdentityError::crops(format!("creating {}", dir.display())))?;
        Ok(Self { dir, cache: Mutex::default() })
    }

    fn path(&self, identity: &str) -> IdentityResult<PathBuf> {
        if !is_plain_id(identity) {
            return Err(IdentityError::invalid("identity id is not a reid id"));
        }
        Ok(self.dir.join(identity))
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, HashMap<String, Key>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The identity's key, if it has one (none once forgotten).
    fn key(&self, identity: &str) -> Option<Key> {
        if let Some(k) = self.cached().get(identity) {
            return Some(*k);
        }
        let bytes = std::fs::read(self.path(identity).ok()?).ok()?;
        let key = *Key::from_slice(bytes.get(..KEY_BYTES)?);
        self.cached().insert(identity.to_owned(), key);
        Some(key)
    }

    /// The identity's key, made (and written durably) on first use.
    fn key_or_new(&self, identity: &str) -> IdentityResult<Key> {
        if let Some(k) = self.key(identity) {
            return Ok(k);
        }
        let path = self.path(identity)?;
        let mut bytes = [0u8; KEY_BYTES];
        OsRng.fill_bytes(&mut bytes);
        let tmp = path.with_extension("tmp");
        write_private(&tmp, &bytes).map_err(IdentityError::crops(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(IdentityError::crops(format!("writing {}", path.display())))?;
        sync_dir(&self.dir);
        let key = *Key::from_slice(&bytes);
        self.cached().insert(identity.to_owned(), key);
        Ok(key)
    }

    /// `text` sealed under the identity's key, as hex (nonce, then ciphertext and tag); the empty
    /// string stays empty.
    pub fn seal(&self, identity: &str, text: &str) -> IdentityResult<String> {
        if text.is_empty() {
            return Ok(String::new());
        }
        let cipher = ChaCha20Poly1305::new(&self.key_or_new(identity)?);
        let mut nonce = [0u8; NONCE_BYTES];
        OsRng.fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), text.as_bytes())
            .map_err(|_| IdentityError::invalid("cannot seal a personal field"))?;
        Ok(hex(nonce.iter().chain(&sealed)))
    }

    /// The text sealed by [`seal`](Self::seal); empty when the key is gone (the identity was
    /// forgotten) or the value does not open.
    pub fn open_sealed(&self, identity: &str, sealed: &str) -> String {
        let Some(bytes) = unhex(sealed) else { return String::new() };
        let (Some(key), true) = (self.key(identity), bytes.len() > NONCE_BYTES) else { return String::new() };
        let (nonce, body) = bytes.split_at(NONCE_BYTES);
        ChaCha20Poly1305::new(&key)
            .decrypt(Nonce::from_slice(nonce), body)
            .ok()
            .and_then(|plain| String::from_utf8(plain).ok())
            .unwrap_or_default()
    }

    /// Deletes the identity's key: every sealed copy of its fields is unreadable from now on.
    pub fn shred(&self, identity: &str) -> IdentityResult<bool> {
        let path = self.path(identity)?;
        self.cached().remove(identity);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&self.dir);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(IdentityError::crops(format!("removing {}", path.display()))(e)),
        }
    }

    /// Whether the identity has a key (it has sealed fields).
    pub fn has_key(&self, identity: &str) -> bool {
        self.key(identity).is_some()
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes a rename or removal in `dir` durable (best effort: not every file system allows it).
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

fn hex<'a>(bytes: impl Iterator<Item = &'a u8>) -> String {
    bytes.map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const ID: &str = "0b7e3b9c-1f61-4f43-9d57-3c9b1a2b9e11";

    #[test]
    fn sealed_fields_open_until_the_key_is_shredded() {
        let dir = tempfile::tempdir().unwrap();
        let keys = PersonalKeys::open(dir.path()).unwrap();
        let sealed = keys.seal(ID, "Ada Lovelace").unwrap();
        assert!(!sealed.contains("Ada"), "the name is not in the clear");
        assert_eq!(keys.open_sealed(ID, &sealed), "Ada Lovelace");
        // A second process reads the key from its file.
        assert_eq!(PersonalKeys::open(dir.path()).unwrap().open_sealed(ID, &sealed), "Ada Lovelace");
        assert!(keys.shred(ID).unwrap());
        assert_eq!(keys.open_sealed(ID, &sealed), "");
        assert_eq!(PersonalKeys::open(dir.path()).unwrap().open_sealed(ID, &sealed), "");
        assert!(!keys.shred(ID).unwrap());
        assert_eq!(keys.seal(ID, "").unwrap(), "");
        assert!(keys.seal("../escape", "x").is_err());
        assert_eq!(keys.open_sealed(ID, "zz"), "");
    }
}
