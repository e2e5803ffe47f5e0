//! Every process on one database must seal and open secrets with the same keys: a node that
//! generated its own key file would seal TOTP seeds and SMTP passwords that the others
//! cannot open (logins answering 500, jobs failing), and open none of theirs. So the
//! database keeps a key check value per key id, and a process whose keyring disagrees with
//! it refuses to start.

use sqlx::Row;

use crate::{
    Database,
    secrets::{EncryptedSecret, KeyCheck, SecretKeyring},
};

#[derive(Debug, thiserror::Error)]
pub enum KeyCheckError {
    #[error(
        "this process's secrets key {key_id:?} is not the key {key_id:?} this database's secrets \
         were sealed with. Every process on one database needs the same keys: set \
         SWITCHYARD_SECRETS_KEYS (or copy the key file secrets.key) from the process that \
         first started on this database"
    )]
    DifferentKey { key_id: String },
    #[error(
        "this process's secrets keys ({held}) include none of the keys this database's secrets \
         were sealed with ({known}). Every process on one database needs the same keys: set \
         SWITCHYARD_SECRETS_KEYS (or copy the key file secrets.key) from the process that \
         first started on this database; to rotate, put the new key first and keep the old ones"
    )]
    NoKnownKey { held: String, known: String },
    #[error("reading the key checks failed: {0}")]
    Database(#[from] sqlx::Error),
}

/// Checks `keyring` against the database's key check values, then records one for its
/// current key when the database has none yet (the first start, or a rotation to a new key
/// id, which needs an old key beside it).
pub async fn verify_keyring(db: &Database, keyring: &SecretKeyring) -> Result<(), KeyCheckError> {
    let stored = stored_checks(db).await?;
    agrees(keyring, &stored)?;
    let current = keyring.current_key_id();
    if !stored.iter().any(|(id, _)| id == current) {
        sqlx::query(
            "INSERT INTO secrets_key_checks (key_id, sealed) VALUES ($1, $2) \
             ON CONFLICT (key_id) DO NOTHING",
        )
        .bind(current)
        .bind(keyring.seal_key_check().as_stored())
        .execute(&db.pool)
        .await?;
        // Another process may have recorded its own key under this id first.
        agrees(keyring, &stored_checks(db).await?)?;
    }
    Ok(())
}

/// The keyring must hold the same key under every id it shares with the database, and at
/// least one of the database's keys (when it has any).
fn agrees(
    keyring: &SecretKeyring,
    stored: &[(String, EncryptedSecret)],
) -> Result<(), KeyCheckError> {
    let mut held_any = false;
    for (key_id, sealed) in stored {
        match keyring.key_check(sealed) {
            KeyCheck::Same => held_any = true,
            KeyCheck::Different => {
                return Err(KeyCheckError::DifferentKey {
                    key_id: key_id.clone(),
                });
            }
            KeyCheck::NotHeld => {}
        }
    }
    if !held_any && !stored.is_empty() {
        let known: Vec<&str> = stored.iter().map(|(id, _)| id.as_str()).collect();
        return Err(KeyCheckError::NoKnownKey {
            held: keyring.key_ids().collect::<Vec<_>>().join(", "),
            known: known.join(", "),
        });
    }
    Ok(())
}

async fn stored_checks(db: &Database) -> Result<Vec<(String, EncryptedSecret)>, sqlx::Error> {
    sqlx::query("SELECT key_id, sealed FROM secrets_key_checks ORDER BY key_id")
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(|row| {
            Ok((
                row.try_get(0)?,
                EncryptedSecret::from_stored(row.try_get(1)?),
            ))
        })
        .collect()
}
