//! Secrets at rest (OWASP ASVS L2, V6): values the platform must read back, such as TOTP seeds
//! or SIP passwords, are sealed with XChaCha20-Poly1305 before they reach an event.
//!
//! Stored form: `v1.<key id>.<base64url-no-pad(nonce || ciphertext || tag)>`. The nonce is 24
//! random bytes per encryption, large enough that random nonces never repeat in practice. The
//! account id is the associated data, so a ciphertext copied into another account's event does
//! not decrypt there.
//!
//! Keyring format, for the key file and for `SWITCHYARD_SECRETS_KEYS` alike: entries
//! `<key id>:<standard base64 of 32 bytes>`, separated by newlines or commas. The first entry is
//! the current key, which encrypts; the others only decrypt. Key ids are 1 to 16 characters of
//! `A-Z a-z 0-9 _ -`. To rotate, put a new entry first (e.g. `k2:$(openssl rand -base64 32)`)
//! and keep the old ones until every secret they sealed has been re-encrypted.

use std::{
    fs::{self, OpenOptions},
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use chacha20poly1305::{AeadInOut as _, KeyInit as _, XChaCha20Poly1305};
use rand::{RngCore as _, rngs::OsRng};
use secrecy::{ExposeSecret as _, SecretBox, SecretString, zeroize::Zeroizing};
use serde::{Deserialize, Serialize};

use crate::domain::AccountId;

const FORMAT_VERSION: &str = "v1";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const FIRST_KEY_ID: &str = "k1";
const MAX_KEY_ID_LEN: usize = 16;
/// The key check value's plaintext and associated data: no account id is this.
const KEY_CHECK_PLAINTEXT: &str = "switchyard key check";
const KEY_CHECK_CONTEXT: &[u8] = b"switchyard-key-check";

/// What a keyring makes of a key check value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// It holds the key the value was sealed with.
    Same,
    /// It holds a key under that id, but another one.
    Different,
    /// It holds no key under that id.
    NotHeld,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot use the key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    // The entry itself is never echoed: it holds key material.
    #[error("key entry {entry} is malformed: {problem}")]
    MalformedKey { entry: usize, problem: &'static str },
    #[error("the key configuration holds no key")]
    NoKeys,
    #[error("key id {0} appears more than once")]
    DuplicateKeyId(String),
    #[error("no key with id {0}: was it dropped before its secrets were re-encrypted?")]
    UnknownKeyId(String),
    #[error("not an encrypted secret of the form v1.<key id>.<payload>")]
    MalformedCiphertext,
    #[error("the secret does not decrypt: it was tampered with or belongs to another account")]
    DecryptionFailed,
}

/// A secret as stored in an event. It serializes as its plain string form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EncryptedSecret(String);

impl EncryptedSecret {
    /// A sealed value as stored, for a column of its own (the key checks).
    pub fn from_stored(stored: String) -> Self {
        Self(stored)
    }

    pub fn as_stored(&self) -> &str {
        &self.0
    }
}

/// The current key, which encrypts, and retired keys, which only decrypt.
#[derive(Debug)]
pub struct SecretKeyring {
    current: DataKey,
    retired: Vec<DataKey>,
}

/// `Debug` shows the id only: `SecretBox` redacts the material.
#[derive(Debug)]
struct DataKey {
    id: KeyId,
    material: SecretBox<[u8; KEY_LEN]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyId(String);

impl SecretKeyring {
    /// Reads the keyring at `path`, or on first start creates it with one fresh key (mode 0600
    /// on unix). Several processes starting at once end up sharing whichever key was written
    /// first.
    pub fn load_or_generate(path: &Path) -> Result<Self, SecretsError> {
        match Self::load(path) {
            Err(SecretsError::KeyFile { source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                Self::generate_into(path)
            }
            loaded => loaded,
        }
    }

    /// Parses a keyring in the format described in the module documentation.
    pub fn from_config(config: &str) -> Result<Self, SecretsError> {
        let mut keys = Vec::new();
        let entries = config.split(['\n', ',']).map(str::trim);
        for (index, entry) in entries.filter(|entry| !entry.is_empty()).enumerate() {
            let key = DataKey::parse(entry).map_err(|problem| SecretsError::MalformedKey {
                entry: index + 1,
                problem,
            })?;
            if keys.iter().any(|known: &DataKey| known.id == key.id) {
                return Err(SecretsError::DuplicateKeyId(key.id.0));
            }
            keys.push(key);
        }
        let mut keys = keys.into_iter();
        let current = keys.next().ok_or(SecretsError::NoKeys)?;
        Ok(Self {
            current,
            retired: keys.collect(),
        })
    }

    /// Seals `plaintext` with the current key, bound to `account`.
    pub fn encrypt(&self, account: AccountId, plaintext: &str) -> EncryptedSecret {
        self.seal(account.0.as_bytes(), plaintext)
    }

    /// Opens `secret`, which must have been sealed for `account` with a key in this keyring.
    pub fn decrypt(
        &self,
        account: AccountId,
        secret: &EncryptedSecret,
    ) -> Result<SecretString, SecretsError> {
        self.open(account.0.as_bytes(), secret)
    }

    /// The id of the key that seals.
    pub fn current_key_id(&self) -> &str {
        &self.current.id.0
    }

    /// Every key id, the current one first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys().map(|key| key.id.0.as_str())
    }

    /// A key check value: a constant sealed with the current key. A process whose keyring
    /// opens it has the same key under that id ([`SecretKeyring::key_check`]).
    pub fn seal_key_check(&self) -> EncryptedSecret {
        self.seal(KEY_CHECK_CONTEXT, KEY_CHECK_PLAINTEXT)
    }

    /// What this keyring makes of a key check value that another process sealed.
    pub fn key_check(&self, sealed: &EncryptedSecret) -> KeyCheck {
        match self.open(KEY_CHECK_CONTEXT, sealed) {
            Ok(plaintext) if plaintext.expose_secret() == KEY_CHECK_PLAINTEXT => KeyCheck::Same,
            Err(SecretsError::UnknownKeyId(_)) => KeyCheck::NotHeld,
            _ => KeyCheck::Different,
        }
    }

    fn seal(&self, associated: &[u8], plaintext: &str) -> EncryptedSecret {
        let mut nonce = [0; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plaintext.as_bytes());
        let tag = self
            .current
            .cipher()
            .encrypt_inout_detached(
                (&nonce).into(),
                associated,
                (&mut sealed[NONCE_LEN..]).into(),
            )
            .expect("a secret is far below XChaCha20-Poly1305's message size limit");
        sealed.extend_from_slice(&tag);
        EncryptedSecret(format!(
            "{FORMAT_VERSION}.{}.{}",
            self.current.id.0,
            URL_SAFE_NO_PAD.encode(&sealed)
        ))
    }

    fn open(
        &self,
        associated: &[u8],
        secret: &EncryptedSecret,
    ) -> Result<SecretString, SecretsError> {
        let (key_id, payload) = secret
            .0
            .strip_prefix(FORMAT_VERSION)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.split_once('.'))
            .ok_or(SecretsError::MalformedCiphertext)?;
        let key = self
            .keys()
            .find(|key| key.id.0 == key_id)
            .ok_or_else(|| SecretsError::UnknownKeyId(key_id.to_owned()))?;
        let sealed = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| SecretsError::MalformedCiphertext)?;
        let (nonce, rest) = sealed
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(SecretsError::MalformedCiphertext)?;
        let (ciphertext, tag) = rest
            .split_last_chunk::<TAG_LEN>()
            .ok_or(SecretsError::MalformedCiphertext)?;
        // An exact-size buffer lets `SecretString` take it without reallocating, which would
        // leave a copy of the plaintext behind that nothing zeroizes.
        let mut plaintext = ciphertext.to_vec();
        key.cipher()
            .decrypt_inout_detached(
                nonce.into(),
                associated,
                plaintext.as_mut_slice().into(),
                tag.into(),
            )
            .map_err(|_| SecretsError::DecryptionFailed)?;
        String::from_utf8(plaintext)
            .map(SecretString::from)
            // Only `seal`, which takes a `&str`, can produce an authentic ciphertext.
            .map_err(|_| SecretsError::DecryptionFailed)
    }

    fn load(path: &Path) -> Result<Self, SecretsError> {
        let contents = fs::read_to_string(path).map_err(|source| SecretsError::KeyFile {
            path: path.to_owned(),
            source,
        })?;
        Self::from_config(&Zeroizing::new(contents))
    }

    fn generate_into(path: &Path) -> Result<Self, SecretsError> {
        let keyring = Self {
            current: DataKey::generate(KeyId(FIRST_KEY_ID.to_owned())),
            retired: Vec::new(),
        };
        let entry = keyring.current.to_entry();
        match publish_new_file(path, entry.as_bytes()) {
            Ok(()) => Ok(keyring),
            // Another process created the file first: use its key so that both agree.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Self::load(path),
            Err(source) => Err(SecretsError::KeyFile {
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn keys(&self) -> impl Iterator<Item = &DataKey> {
        std::iter::once(&self.current).chain(&self.retired)
    }
}

impl DataKey {
    fn generate(id: KeyId) -> Self {
        Self {
            id,
            material: SecretBox::init_with_mut(|material: &mut [u8; KEY_LEN]| {
                OsRng.fill_bytes(material)
            }),
        }
    }

    fn parse(entry: &str) -> Result<Self, &'static str> {
        let (id, encoded) = entry
            .split_once(':')
            .ok_or("expected <key id>:<base64 key>")?;
        let id = KeyId::parse(id.trim())
            .ok_or("a key id is 1 to 16 characters of A-Z, a-z, 0-9, _ and -")?;
        let decoded = Zeroizing::new(
            STANDARD
                .decode(encoded.trim())
                .map_err(|_| "the key is not standard base64")?,
        );
        let material: &[u8; KEY_LEN] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| "the key is not 32 bytes long")?;
        Ok(Self {
            id,
            material: SecretBox::init_with_mut(|slot: &mut [u8; KEY_LEN]| {
                slot.copy_from_slice(material)
            }),
        })
    }

    fn to_entry(&self) -> Zeroizing<String> {
        let encoded = Zeroizing::new(STANDARD.encode(self.material.expose_secret()));
        Zeroizing::new(format!("{}:{}\n", self.id.0, encoded.as_str()))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.material.expose_secret().into())
    }
}

impl KeyId {
    fn parse(raw: &str) -> Option<Self> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        (!raw.is_empty() && raw.len() <= MAX_KEY_ID_LEN && raw.chars().all(allowed))
            .then(|| Self(raw.to_owned()))
    }
}

/// Writes `contents` to a fresh temporary file beside `path`, flushes it to disk, then links it
/// into place. Unlike a rename, the link fails with `AlreadyExists` rather than replacing a
/// file another process published meanwhile; either way readers never see a partial file.
fn publish_new_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the key file path names no file",
        )
    })?;
    let mut temp_name = file_name.to_owned();
    temp_name.push(format!(".{:016x}.tmp", OsRng.next_u64()));
    let temp_path = path.with_file_name(temp_name);

    let published =
        write_owner_only(&temp_path, contents).and_then(|()| fs::hard_link(&temp_path, path));
    // The temporary name is only a staging step: on success the link keeps the contents.
    let _ = fs::remove_file(&temp_path);
    published?;
    #[cfg(unix)]
    sync_parent_dir(path)?;
    Ok(())
}

fn write_owner_only(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Makes the new directory entry durable, so a crash cannot lose a key that already sealed data.
#[cfg(unix)]
fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let parent = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, fill: u8) -> String {
        format!("{id}:{}", STANDARD.encode([fill; KEY_LEN]))
    }

    fn keyring(config: &str) -> SecretKeyring {
        SecretKeyring::from_config(config).expect("valid keyring")
    }

    fn decrypted(
        keyring: &SecretKeyring,
        account: AccountId,
        secret: &EncryptedSecret,
    ) -> Result<String, SecretsError> {
        keyring
            .decrypt(account, secret)
            .map(|plaintext| plaintext.expose_secret().to_owned())
    }

    #[test]
    fn roundtrips_and_stores_version_key_id_and_base64url_payload() {
        let keys = keyring(&entry("k1", 1));
        let account = AccountId::new();
        let secret = keys.encrypt(account, "sip password ✓");

        let payload = secret.0.strip_prefix("v1.k1.").expect("v1.k1. prefix");
        let sealed = URL_SAFE_NO_PAD.decode(payload).expect("base64url");
        assert_eq!(sealed.len(), NONCE_LEN + "sip password ✓".len() + TAG_LEN);
        assert_eq!(
            decrypted(&keys, account, &secret).unwrap(),
            "sip password ✓"
        );
    }

    #[test]
    fn serializes_as_a_plain_json_string() {
        let secret = keyring(&entry("k1", 1)).encrypt(AccountId::new(), "x");
        let json = serde_json::to_string(&secret).unwrap();
        assert_eq!(json, format!("\"{}\"", secret.0));
        assert_eq!(
            serde_json::from_str::<EncryptedSecret>(&json).unwrap(),
            secret
        );
    }

    #[test]
    fn uses_a_fresh_nonce_for_every_encryption() {
        let keys = keyring(&entry("k1", 1));
        let account = AccountId::new();
        let first = keys.encrypt(account, "same");
        let second = keys.encrypt(account, "same");
        assert_ne!(first, second);
        let nonce = |secret: &EncryptedSecret| {
            URL_SAFE_NO_PAD.decode(&secret.0["v1.k1.".len()..]).unwrap()[..NONCE_LEN].to_vec()
        };
        assert_ne!(nonce(&first), nonce(&second));
    }

    #[test]
    fn a_secret_moved_to_another_account_does_not_decrypt() {
        let keys = keyring(&entry("k1", 1));
        let secret = keys.encrypt(AccountId::new(), "seed");
        assert!(matches!(
            decrypted(&keys, AccountId::new(), &secret),
            Err(SecretsError::DecryptionFailed)
        ));
    }

    #[test]
    fn a_tampered_byte_does_not_decrypt() {
        let keys = keyring(&entry("k1", 1));
        let account = AccountId::new();
        let secret = keys.encrypt(account, "seed");
        let mut sealed = URL_SAFE_NO_PAD.decode(&secret.0["v1.k1.".len()..]).unwrap();
        for index in [0, NONCE_LEN, sealed.len() - 1] {
            sealed[index] ^= 1;
            let tampered = EncryptedSecret(format!("v1.k1.{}", URL_SAFE_NO_PAD.encode(&sealed)));
            assert!(
                matches!(
                    decrypted(&keys, account, &tampered),
                    Err(SecretsError::DecryptionFailed)
                ),
                "byte {index}"
            );
            sealed[index] ^= 1;
        }
    }

    #[test]
    fn malformed_stored_forms_are_rejected() {
        let keys = keyring(&entry("k1", 1));
        for stored in ["", "v1.k1", "v2.k1.AAAA", "v1.k1.not base64", "v1.k1.AAAA"] {
            assert!(
                matches!(
                    decrypted(&keys, AccountId::new(), &EncryptedSecret(stored.into())),
                    Err(SecretsError::MalformedCiphertext)
                ),
                "{stored:?}"
            );
        }
    }

    #[test]
    fn a_key_id_missing_from_the_keyring_is_reported_by_name() {
        let account = AccountId::new();
        let secret = keyring(&entry("k1", 1)).encrypt(account, "seed");
        let error = decrypted(&keyring(&entry("k2", 2)), account, &secret).unwrap_err();
        assert!(
            matches!(&error, SecretsError::UnknownKeyId(id) if id == "k1"),
            "{error}"
        );
    }

    #[test]
    fn rotation_keeps_old_secrets_readable_and_encrypts_with_the_new_key() {
        let account = AccountId::new();
        let old_keys = keyring(&entry("k1", 1));
        let rotated = keyring(&format!("{}\n{}\n", entry("k2", 2), entry("k1", 1)));

        let old_secret = old_keys.encrypt(account, "before rotation");
        assert_eq!(
            decrypted(&rotated, account, &old_secret).unwrap(),
            "before rotation"
        );

        let new_secret = rotated.encrypt(account, "after rotation");
        assert!(new_secret.0.starts_with("v1.k2."), "{}", new_secret.0);
        assert!(matches!(
            decrypted(&old_keys, account, &new_secret),
            Err(SecretsError::UnknownKeyId(id)) if id == "k2"
        ));
    }

    #[test]
    fn config_entries_may_be_separated_by_commas_for_an_environment_variable() {
        let keys = keyring(&format!(" {} , {} ", entry("k2", 2), entry("k1", 1)));
        assert_eq!(keys.current.id.0, "k2");
        assert_eq!(keys.retired.len(), 1);
    }

    #[test]
    fn malformed_configs_are_rejected_without_echoing_key_material() {
        let short_key = format!("k1:{}", STANDARD.encode([9; 16]));
        let cases = [
            ("", "holds no key"),
            ("k1", "entry 1 is malformed"),
            ("k.1:AAAA", "entry 1 is malformed"),
            ("k1:not base64!", "entry 1 is malformed"),
            (short_key.as_str(), "entry 1 is malformed"),
        ];
        for (config, expected) in cases {
            let message = SecretKeyring::from_config(config).unwrap_err().to_string();
            assert!(message.contains(expected), "{config:?}: {message}");
            assert!(!message.contains(&STANDARD.encode([9; 16])), "{message}");
        }
        let duplicate = format!("{},{}", entry("k1", 1), entry("k1", 2));
        assert!(matches!(
            SecretKeyring::from_config(&duplicate),
            Err(SecretsError::DuplicateKeyId(id)) if id == "k1"
        ));
    }

    #[test]
    fn the_key_file_is_generated_on_first_start_and_reused_afterwards() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.keys");
        let account = AccountId::new();

        let first = SecretKeyring::load_or_generate(&path).unwrap();
        let written = fs::read_to_string(&path).unwrap();
        let second = SecretKeyring::load_or_generate(&path).unwrap();

        assert!(
            written.starts_with("k1:"),
            "the file starts with the key id"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), written, "not rewritten");
        let secret = first.encrypt(account, "kept across restarts");
        assert_eq!(
            decrypted(&second, account, &secret).unwrap(),
            "kept across restarts"
        );
        let leftovers = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }

    #[test]
    fn an_unreadable_key_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.keys");
        fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            SecretKeyring::load_or_generate(&path),
            Err(SecretsError::MalformedKey { entry: 1, .. })
        ));
        assert_eq!(fs::read_to_string(&path).unwrap(), "garbage");
    }

    #[cfg(unix)]
    #[test]
    fn the_generated_key_file_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.keys");
        SecretKeyring::load_or_generate(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    #[test]
    fn debug_output_shows_neither_keys_nor_plaintexts() {
        let keys = keyring(&format!("{},{}", entry("k2", 2), entry("k1", 1)));
        let account = AccountId::new();
        let plaintext = keys
            .decrypt(account, &keys.encrypt(account, "hunter2"))
            .unwrap();

        let debug = format!("{keys:?} {plaintext:?}");
        for key in [[1; KEY_LEN], [2; KEY_LEN]] {
            assert!(!debug.contains(&STANDARD.encode(key)), "{debug}");
        }
        assert!(!debug.contains("2, 2, 2"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("k2") && debug.contains("k1"), "{debug}");
    }
}
