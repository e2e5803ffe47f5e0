//! Password hashing with Argon2id at OWASP's minimum (m = 19 MiB, t = 2, p = 1), on tokio's
//! blocking pool behind a semaphore so a burst of logins cannot take every core or exhaust
//! memory (each hash holds 19 MiB while it runs).

use std::sync::{Arc, LazyLock};

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordVerifier, Version,
    password_hash::{PasswordHasher as _, SaltString, rand_core::OsRng},
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid Argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A hash of a random password, verified against when the email is unknown so that an
/// unknown email costs the same time as a wrong password.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(uuid::Uuid::new_v4().as_bytes(), &salt)
        .expect("hashing succeeds")
        .to_string()
});

#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
}

impl PasswordHasher {
    /// `max_concurrent` hashes run at once; more wait their turn.
    pub fn new(max_concurrent: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
        }
    }

    pub async fn hash(&self, password: SecretString) -> String {
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon2()
                .hash_password(password.expose_secret().as_bytes(), &salt)
                .expect("hashing succeeds")
                .to_string()
        })
        .await
    }

    /// Whether `password` matches `hash`; with no hash (unknown user) it spends the same
    /// time and answers false.
    pub async fn verify(&self, password: SecretString, hash: Option<String>) -> bool {
        self.run(move || {
            let known = hash.is_some();
            let hash = hash.unwrap_or_else(|| DUMMY_HASH.clone());
            let matches = PasswordHash::new(&hash).is_ok_and(|parsed| {
                argon2()
                    .verify_password(password.expose_secret().as_bytes(), &parsed)
                    .is_ok()
            });
            known && matches
        })
        .await
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("semaphore never closes");
        tokio::task::spawn_blocking(work)
            .await
            .expect("password hashing does not panic")
    }
}

#[cfg(test)]
mod tests {
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
    }
}
