//! RFC 6238 TOTP for two-factor login: HMAC-SHA1, 6 digits, 30 s steps, one step of clock skew
//! either way, and each step accepted at most once (RFC 6238 §5.2). Recovery codes are the way
//! in when the authenticator is lost; only their hashes are kept, and each works once.
//!
//! The code arithmetic and the constant-time code comparison come from `totp-rs`. The window
//! and the replay rule are ours: `Totp::check` answers the first step that matches and leaves
//! replay to the caller, so we check each step the replay rule still allows, one at a time.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rand::{Rng as _, RngCore as _, rngs::OsRng};
use secrecy::{ExposeSecret as _, SecretBox, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use totp_rs::{Algorithm, Builder, Secret, Totp};

const SEED_LEN: usize = 20;
const STEP_SECONDS: u64 = 30;
const DIGITS: u8 = 6;
const ALLOWED_SKEW_STEPS: u64 = 1;

/// Everything but RFC 3986's unreserved characters is percent-encoded in the URI.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Lowercase letters and digits without 0, 1, i, l and o, which read alike.
const RECOVERY_ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";
/// 12 symbols from 31 carry 12 × log2(31) ≈ 59 bits; 10 would fall short of 50.
const RECOVERY_GROUPS: usize = 3;
const RECOVERY_GROUP_LEN: usize = 4;
const RECOVERY_CODE_COUNT: usize = 10;

/// The 160-bit shared secret between the server and the user's authenticator.
#[derive(Debug)]
pub struct TotpSeed(SecretBox<[u8; SEED_LEN]>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a TOTP seed is 32 characters of uppercase base32 (A-Z, 2-7)")]
pub struct InvalidTotpSeed;

impl TotpSeed {
    /// 160 bits from the operating system's CSPRNG, the length RFC 4226 §4 recommends.
    pub fn generate() -> Self {
        Self(SecretBox::init_with_mut(|seed: &mut [u8; SEED_LEN]| {
            OsRng.fill_bytes(seed)
        }))
    }

    /// Unpadded RFC 4648 base32, the form authenticator apps accept for manual entry.
    pub fn to_base32(&self) -> SecretString {
        self.totp_secret().to_base32().into()
    }

    /// Parses what [`Self::to_base32`] produced; anything but exactly 160 bits is refused.
    pub fn from_base32(encoded: &str) -> Result<Self, InvalidTotpSeed> {
        let decoded = Secret::try_from_base32(encoded).map_err(|_| InvalidTotpSeed)?;
        let bytes: &[u8; SEED_LEN] = decoded.as_bytes().try_into().map_err(|_| InvalidTotpSeed)?;
        Ok(Self(SecretBox::init_with_mut(
            |seed: &mut [u8; SEED_LEN]| seed.copy_from_slice(bytes),
        )))
    }

    fn totp_secret(&self) -> Secret {
        Secret::new_stack(*self.0.expose_secret())
    }

    /// A generator for exactly one step: the window is walked in [`verify`].
    fn totp(&self) -> Totp {
        Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(DIGITS)
            .with_step_duration(STEP_SECONDS)
            .with_skew(0)
            .with_secret(self.totp_secret())
            .build()
            .expect("SHA1, 6 digits, a 30 s step and a 160-bit seed are RFC-compliant")
    }
}

/// The `otpauth://` URI an authenticator app reads from a QR code (Key Uri Format). It holds
/// the seed, hence `SecretString`.
pub fn otpauth_uri(seed: &TotpSeed, issuer: &str, account_label: &str) -> SecretString {
    let issuer = utf8_percent_encode(issuer, URI_COMPONENT);
    let account_label = utf8_percent_encode(account_label, URI_COMPONENT);
    let secret = seed.to_base32();
    format!(
        "otpauth://totp/{issuer}:{account_label}?secret={}&issuer={issuer}\
         &algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        secret.expose_secret()
    )
    .into()
}

/// The time step `code` belongs to, if it matches the step of `now_unix_secs` or one either side
/// of it, and that step is later than `last_accepted_step`. The caller stores the returned step
/// as the new `last_accepted_step`, so a code, or any older one, never works twice.
pub fn verify(
    seed: &TotpSeed,
    code: &str,
    now_unix_secs: u64,
    last_accepted_step: Option<u64>,
) -> Option<u64> {
    if code.len() != usize::from(DIGITS) || !code.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let totp = seed.totp();
    let current_step = now_unix_secs / STEP_SECONDS;
    let window = current_step.saturating_sub(ALLOWED_SKEW_STEPS)
        ..=current_step.saturating_add(ALLOWED_SKEW_STEPS);
    window
        .filter(|&step| last_accepted_step.is_none_or(|last| step > last))
        .find(|&step| totp.check(code, step * STEP_SECONDS).is_some())
}

/// Fresh recovery codes, shown to the user once, and their hashes, which are all that is stored.
/// `hashes[i]` is the hash of `codes[i]`. The caller deletes a hash once its code is used.
#[derive(Debug)]
pub struct RecoveryCodes {
    pub codes: Vec<SecretString>,
    pub hashes: Vec<RecoveryCodeHash>,
}

/// SHA-256 of a normalized recovery code, in hex. A fast unsalted hash suffices because the
/// codes are ~59 random bits, beyond the reach of a brute-force search of the hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RecoveryCodeHash(String);

impl RecoveryCodes {
    pub fn generate() -> Self {
        let codes: Vec<SecretString> = (0..RECOVERY_CODE_COUNT)
            .map(|_| random_recovery_code().into())
            .collect();
        let hashes = codes
            .iter()
            .map(|code| hash_recovery_code(code.expose_secret()))
            .collect();
        Self { codes, hashes }
    }
}

/// Hashes what the user typed. Case, surrounding or inner whitespace and dashes do not matter,
/// so `ABCD-efgh-2345`, `abcdefgh2345` and ` abcd efgh 2345 ` hash alike.
pub fn hash_recovery_code(input: &str) -> RecoveryCodeHash {
    let normalized: String = input
        .chars()
        .filter(|&c| c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    RecoveryCodeHash(hex::encode(Sha256::digest(normalized.as_bytes())))
}

/// `xxxx-xxxx-xxxx`, each symbol drawn uniformly from [`RECOVERY_ALPHABET`].
fn random_recovery_code() -> String {
    let group = || -> String {
        (0..RECOVERY_GROUP_LEN)
            .map(|_| char::from(RECOVERY_ALPHABET[OsRng.gen_range(0..RECOVERY_ALPHABET.len())]))
            .collect()
    };
    (0..RECOVERY_GROUPS)
        .map(|_| group())
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// The SHA1 seed of RFC 6238 Appendix B.
    fn rfc_seed() -> TotpSeed {
        TotpSeed(SecretBox::new(Box::new(*b"12345678901234567890")))
    }

    fn code_at_step(seed: &TotpSeed, step: u64) -> String {
        seed.totp().generate(step * STEP_SECONDS).to_string()
    }

    #[test]
    fn matches_the_rfc_6238_sha1_vectors_truncated_to_six_digits() {
        let seed = rfc_seed();
        for (time, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(verify(&seed, code, time, None), Some(time / 30), "T={time}");
        }
    }

    #[test]
    fn accepts_one_step_of_skew_either_way_but_not_two() {
        let seed = TotpSeed::generate();
        let now = 1_700_000_000;
        let step = now / STEP_SECONDS;
        for accepted in [step - 1, step, step + 1] {
            let code = code_at_step(&seed, accepted);
            assert_eq!(verify(&seed, &code, now, None), Some(accepted));
        }
        for rejected in [step - 2, step + 2] {
            let code = code_at_step(&seed, rejected);
            assert_eq!(verify(&seed, &code, now, None), None);
        }
    }

    #[test]
    fn a_code_is_accepted_only_once_even_within_its_window() {
        let seed = TotpSeed::generate();
        let now = 1_700_000_000;
        let code = code_at_step(&seed, now / STEP_SECONDS);
        let accepted = verify(&seed, &code, now, None).expect("first use");
        assert_eq!(verify(&seed, &code, now, Some(accepted)), None);
        assert_eq!(verify(&seed, &code, now + 29, Some(accepted)), None);
    }

    #[test]
    fn an_older_code_is_rejected_after_a_newer_one_was_accepted() {
        let seed = TotpSeed::generate();
        let now = 1_700_000_000;
        let step = now / STEP_SECONDS;
        let newer = verify(&seed, &code_at_step(&seed, step + 1), now, None);
        assert_eq!(newer, Some(step + 1));
        assert_eq!(verify(&seed, &code_at_step(&seed, step), now, newer), None);
    }

    #[test]
    fn the_first_step_has_no_step_before_it() {
        let seed = rfc_seed();
        assert_eq!(verify(&seed, &code_at_step(&seed, 0), 0, None), Some(0));
        assert_eq!(verify(&seed, &code_at_step(&seed, 1), 0, None), Some(1));
    }

    #[test]
    fn rejects_codes_that_are_not_exactly_six_ascii_digits() {
        let seed = rfc_seed();
        for malformed in [
            "",
            "28708",
            "2870820",
            "+87082",
            "-87082",
            " 87082",
            "287082 ",
            "28708a",
            "２８７０８２",
        ] {
            assert_eq!(verify(&seed, malformed, 59, None), None, "{malformed:?}");
        }
    }

    #[test]
    fn generated_seeds_are_160_random_bits() {
        let first = TotpSeed::generate();
        let second = TotpSeed::generate();
        assert_eq!(first.0.expose_secret().len(), 20);
        assert_ne!(first.0.expose_secret(), second.0.expose_secret());
    }

    #[test]
    fn seeds_roundtrip_through_unpadded_base32() {
        let seed = TotpSeed::generate();
        let encoded = seed.to_base32();
        assert_eq!(encoded.expose_secret().len(), 32);
        assert!(!encoded.expose_secret().contains('='));
        let parsed = TotpSeed::from_base32(encoded.expose_secret()).unwrap();
        assert_eq!(parsed.0.expose_secret(), seed.0.expose_secret());

        assert_eq!(
            rfc_seed().to_base32().expose_secret(),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
    }

    #[test]
    fn rejects_base32_that_is_not_a_160_bit_seed() {
        for malformed in [
            "",
            "GEZDGNBVGY3TQOJQ",
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ1",
            "not base32",
        ] {
            assert_eq!(
                TotpSeed::from_base32(malformed).map(|_| ()),
                Err(InvalidTotpSeed),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn builds_a_percent_encoded_otpauth_uri() {
        let uri = otpauth_uri(&rfc_seed(), "Switchyard", "alice@example.com");
        assert_eq!(
            uri.expose_secret(),
            "otpauth://totp/Switchyard:alice%40example.com\
             ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Switchyard\
             &algorithm=SHA1&digits=6&period=30"
        );
        let spaced = otpauth_uri(&rfc_seed(), "Switch yard", "a+b:c@example.com");
        assert!(
            spaced
                .expose_secret()
                .starts_with("otpauth://totp/Switch%20yard:a%2Bb%3Ac%40example.com?"),
            "{}",
            spaced.expose_secret()
        );
    }

    #[test]
    fn seeds_do_not_show_in_debug_output() {
        let debug = format!("{:?}", rfc_seed());
        assert!(!debug.contains("49, 50, 51"), "{debug}");
        assert!(!debug.contains("1234567890"), "{debug}");
    }

    #[test]
    fn recovery_codes_are_ten_distinct_readable_codes_with_matching_hashes() {
        let generated = RecoveryCodes::generate();
        assert_eq!(generated.codes.len(), 10);
        let codes: HashSet<&str> = generated.codes.iter().map(|c| c.expose_secret()).collect();
        assert_eq!(codes.len(), 10, "codes are distinct");
        for (code, hash) in generated.codes.iter().zip(&generated.hashes) {
            let code = code.expose_secret();
            assert_eq!(code.len(), 14, "{code}");
            assert!(
                code.split('-').all(|group| group.len() == 4
                    && group.bytes().all(|b| RECOVERY_ALPHABET.contains(&b))),
                "{code}"
            );
            assert_eq!(&hash_recovery_code(code), hash);
        }
        assert_eq!(
            generated.hashes.iter().collect::<HashSet<_>>().len(),
            10,
            "hashes are distinct"
        );
    }

    #[test]
    fn recovery_codes_are_normalized_before_hashing() {
        let canonical = hash_recovery_code("abcd-efgh-2345");
        for typed in [
            "ABCD-EFGH-2345",
            "abcdefgh2345",
            "  abcd efgh 2345\n",
            "AbCd-eFgH-2345 ",
        ] {
            assert_eq!(hash_recovery_code(typed), canonical, "{typed:?}");
        }
        assert_ne!(hash_recovery_code("abcd-efgh-2346"), canonical);
        assert_eq!(canonical.0.len(), 64);
        assert!(canonical.0.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
