//! What a start needs to see that a webhook secret changed while the daemon was stopped,
//! without the history ever holding a secret.
//!
//! The baseline a start compares with (`data/config.db`) keeps every value as `config
//! get` shows it, webhook secrets masked: a change of only a secret looked like no change.
//! Beside the masked webhooks it keeps a fingerprint of their secrets: an HMAC-SHA256
//! keyed by 32 random bytes kept in `$AGT_HOME/config.key` (0600), next to `agt.toml`,
//! which holds the secrets themselves. Unkeyed, or keyed by a salt stored with it, a
//! hash of a short secret could be tested against guesses by whoever has a copy of the
//! store (a backup of `data/`); keyed by a file that lives with the secrets, the store
//! alone tells nothing, not even whether two homes share a secret, and whoever has the
//! key file has `agt.toml` too. The fingerprint names its key (a hash of it), so a
//! key file lost or replaced makes the comparison say "cannot tell", never a change.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The key fingerprints are made with.
pub struct Key {
    bytes: [u8; 32],
    /// Why this start made a new key, if it did (the file was missing, or did not hold a
    /// key): the start that compares fingerprints made with the old one says so.
    pub made_because: Option<&'static str>,
}

impl Key {
    /// The key in `file`, else a new one written there (created 0600, never over another
    /// daemon's). A file that does not hold a key (cut short, edited) is replaced: it only
    /// costs this start its comparison of secrets, which then says it cannot tell
    /// (`Config::record_offline_changes`). A file that cannot be written leaves a key for
    /// this run only, said in the log.
    pub fn load_or_create(file: &Path) -> Key {
        let made_because = match std::fs::read_to_string(file) {
            Ok(s) => match parse(s.trim()) {
                Some(bytes) => return Key { bytes, made_because: None },
                None => "did not hold a key",
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "was missing",
            Err(_) => "could not be read",
        };
        let bytes: [u8; 32] = rand::random();
        if let Err(e) = write(file, &bytes) {
            tracing::warn!(file = %file.display(), error = %e,
                "cannot keep the key that fingerprints webhook secrets: a secret changed while the daemon is stopped will not be announced at the next start");
        }
        Key { bytes, made_because: Some(made_because) }
    }

    /// The fingerprint of the webhooks' secrets, in their order (none for a webhook
    /// without one): `v1:<key id>:<hmac>`, hex.
    pub fn fingerprint<'a>(&self, secrets: impl IntoIterator<Item = Option<&'a str>>) -> String {
        let secrets: Vec<Option<&str>> = secrets.into_iter().collect();
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.bytes).expect("HMAC takes a key of any length");
        // JSON: unambiguous where a secret holds a separator, and none from "".
        mac.update(serde_json::to_string(&secrets).unwrap_or_default().as_bytes());
        format!("v1:{}:{}", self.id(), hex::encode(mac.finalize().into_bytes()))
    }

    /// Which key made a fingerprint: a hash of it, which says nothing of the key.
    fn id(&self) -> String {
        hex::encode(&Sha256::digest([b"agt config fingerprint key id:".as_slice(), &self.bytes].concat())[..8])
    }

    /// Whether a stored fingerprint says the secrets are other than `now`'s: `None` where
    /// it cannot tell (no fingerprint stored yet, or one made with another key).
    pub fn differs(&self, stored: Option<&str>, now: &str) -> Option<bool> {
        let stored = stored?;
        let same_key = |f: &str| f.rsplit_once(':').map(|(head, _)| head.to_string());
        (same_key(stored)? == same_key(now)?).then(|| stored != now)
    }
}

fn parse(hex_key: &str) -> Option<[u8; 32]> {
    hex::decode(hex_key).ok()?.try_into().ok()
}

fn write(file: &Path, key: &[u8; 32]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // A new file beside, renamed over: a key half written is never read back.
    let temp = file.with_extension("key.new");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temp)?;
    f.write_all(format!("{}\n", hex::encode(key)).as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&temp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_tells_secrets_apart_and_never_holds_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.key");
        let key = Key::load_or_create(&file);
        assert_eq!(key.made_because, Some("was missing"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        let a = key.fingerprint([Some("s3cret"), None]);
        assert!(!a.contains("s3cret") && !a.contains(&hex::encode("s3cret")), "{a}");
        let again = Key::load_or_create(&file);
        assert_eq!((again.fingerprint([Some("s3cret"), None]), again.made_because), (a.clone(), None), "the same key at the next start");
        let b = key.fingerprint([Some("other"), None]);
        assert_eq!(key.differs(Some(&a), &b), Some(true));
        assert_eq!(key.differs(Some(&a), &a), Some(false));
        assert_ne!(key.fingerprint([None, Some("s3cret")]), a, "which webhook has it counts");
        assert_ne!(key.fingerprint([Some("")]), key.fingerprint([None]));
        // Another home's key: another fingerprint of the same secret, and no verdict.
        let other = Key::load_or_create(&dir.path().join("other.key"));
        let c = other.fingerprint([Some("s3cret"), None]);
        assert_ne!(c, a);
        assert_eq!(key.differs(Some(&c), &a), None);
        assert_eq!(key.differs(None, &a), None);
        // A key file that does not hold a key is replaced.
        std::fs::write(&file, "not a key").unwrap();
        let fresh = Key::load_or_create(&file);
        assert_eq!(fresh.made_because, Some("did not hold a key"));
        assert_eq!(fresh.differs(Some(&a), &fresh.fingerprint([Some("s3cret"), None])), None);
    }
}
