//! Password hashing with Argon2id at OWASP's minimum (m = 19 MiB, t = 2, p = 1), on tokio's
//! blocking pool behind a semaphore so a burst of logins cannot take every core.
//!
//! Each permit owns one 19 MiB working memory, reused for every hash it runs. Letting the
//! `argon2` crate allocate it per hash made the allocator keep ever more of those blocks
//! around: peak memory grew by ~1 MiB per login (365 MiB after 320 logins on two cores),
//! where reuse keeps it at permits × 19 MiB.

use std::sync::{Arc, LazyLock, Mutex};

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{Output, ParamsString, SaltString, rand_core::OsRng},
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

fn params() -> Params {
    Params::new(19 * 1024, 2, 1, None).expect("valid Argon2 parameters")
}

/// Working memory for one Argon2 run at our parameters.
type Memory = Vec<Block>;

fn new_memory(params: &Params) -> Memory {
    vec![Block::default(); params.block_count()]
}

/// A hash of a random password, verified against when the email is unknown so that an
/// unknown email costs the same time as a wrong password.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let password = uuid::Uuid::new_v4().to_string();
    hash_with(password.as_bytes(), &mut new_memory(&params()))
});

/// Argon2id of `password` with a fresh salt, as a PHC string.
fn hash_with(password: &[u8], memory: &mut Memory) -> String {
    let params = params();
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt
        .decode_b64(&mut salt_bytes)
        .expect("a generated salt decodes");
    let mut output = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password, salt_bytes, &mut output, memory)
        .expect("hashing succeeds");
    PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).expect("parameters format"),
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&output).expect("output length is valid")),
    }
    .to_string()
}

/// Whether `password` matches the PHC string `hash`, under the parameters stored in it.
fn verify_with(password: &[u8], hash: &str, memory: &mut Memory) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
        parsed.salt,
        parsed.hash,
    ) else {
        return false;
    };
    let version = parsed
        .version
        .map_or(Ok(Version::V0x13), Version::try_from)
        .unwrap_or(Version::V0x13);
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    // A hash made under other parameters (say, before they were raised) needs its own size.
    let mut other_memory;
    let memory = if memory.len() == params.block_count() {
        memory
    } else {
        other_memory = new_memory(&params);
        &mut other_memory
    };
    let mut output = vec![0u8; expected.len()];
    let computed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password,
        salt_bytes,
        &mut output,
        memory,
    );
    // `Output` compares in constant time.
    computed.is_ok() && Output::new(&output).is_ok_and(|output| output == expected)
}

#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    /// Working memories not in use; one per permit at most.
    memories: Arc<Mutex<Vec<Memory>>>,
}

impl PasswordHasher {
    /// `max_concurrent` hashes run at once; more wait their turn.
    pub fn new(max_concurrent: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            memories: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub async fn hash(&self, password: SecretString) -> String {
        self.run(move |memory| hash_with(password.expose_secret().as_bytes(), memory))
            .await
    }

    /// Whether `password` matches `hash`; with no hash (unknown user) it spends the same
    /// time and answers false.
    pub async fn verify(&self, password: SecretString, hash: Option<String>) -> bool {
        self.run(move |memory| {
            let known = hash.is_some();
            let hash = hash.unwrap_or_else(|| DUMMY_HASH.clone());
            let matches = verify_with(password.expose_secret().as_bytes(), &hash, memory);
            known && matches
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Memory) -> T + Send + 'static,
    ) -> T {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("semaphore never closes");
        let memory = self.memories.lock().expect("memories lock").pop();
        let (answer, memory) = tokio::task::spawn_blocking(move || {
            let mut memory = memory.unwrap_or_else(|| new_memory(&params()));
            (work(&mut memory), memory)
        })
        .await
        .expect("password hashing does not panic");
        self.memories.lock().expect("memories lock").push(memory);
        answer
    }
}

#[cfg(test)]
mod tests {
    use argon2::{PasswordHasher as _, PasswordVerifier as _};

    use super::*;

    #[tokio::test]
    async fn hashes_with_argon2id_at_owasp_parameters_and_verifies() {
        let hasher = PasswordHasher::new(2);
        let hash = hasher.hash("correct horse".into()).await;
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            hasher
                .verify("correct horse".into(), Some(hash.clone()))
                .await
        );
        assert!(!hasher.verify("wrong horse".into(), Some(hash)).await);
        assert!(!hasher.verify("correct horse".into(), None).await);
        assert!(
            !hasher
                .verify("correct horse".into(), Some("not a hash".into()))
                .await
        );
    }

    #[tokio::test]
    async fn agrees_with_the_argon2_crate_both_ways_and_under_other_parameters() {
        let hasher = PasswordHasher::new(1);
        let ours = hasher.hash("correct horse".into()).await;
        let standard = Argon2::default();
        assert!(
            standard
                .verify_password(b"correct horse", &PasswordHash::new(&ours).unwrap())
                .is_ok()
        );
        let cheaper = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 1, 1, None).unwrap(),
        );
        let salt = SaltString::generate(&mut OsRng);
        let theirs = cheaper
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert!(
            hasher
                .verify("correct horse".into(), Some(theirs.clone()))
                .await
        );
        assert!(!hasher.verify("wrong horse".into(), Some(theirs)).await);
    }
}
