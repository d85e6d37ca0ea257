//! MySQL's password scrambles, both ways: `mysql_native_password` (SHA-1) and
//! `caching_sha2_password` (SHA-256), computed from the password and the server's
//! 20-byte scramble. warpdrive knows its clients' passwords, so as a server it checks a
//! response by computing the one expected.

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// `mysql_native_password`'s plugin name.
pub const NATIVE: &[u8] = b"mysql_native_password";
/// `caching_sha2_password`'s plugin name.
pub const CACHING_SHA2: &[u8] = b"caching_sha2_password";

/// caching_sha2_password's AuthMoreData byte: the fast path succeeded.
pub const FAST_AUTH_SUCCESS: u8 = 3;
/// caching_sha2_password's AuthMoreData byte: send the password itself.
pub const PERFORM_FULL_AUTHENTICATION: u8 = 4;
/// caching_sha2_password's request for the server's RSA public key.
pub const REQUEST_PUBLIC_KEY: u8 = 2;

/// The `mysql_native_password` response: SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw))).
/// An empty password answers with nothing.
pub fn native_response(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = Sha1::digest(password);
    let stage2 = Sha1::digest(stage1);
    let mut hasher = Sha1::new();
    hasher.update(scramble);
    hasher.update(stage2);
    let mask = hasher.finalize();
    stage1.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect()
}

/// The `caching_sha2_password` response: SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) +
/// scramble). An empty password answers with nothing.
pub fn caching_sha2_response(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = Sha256::digest(password);
    let stage2 = Sha256::digest(stage1);
    let mut hasher = Sha256::new();
    hasher.update(stage2);
    hasher.update(scramble);
    let mask = hasher.finalize();
    stage1.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect()
}

/// caching_sha2_password's full authentication without TLS: the password
/// (NUL-terminated) XORed with the scramble, encrypted with the server's RSA public key
/// (PEM), OAEP with SHA-1, as MySQL's clients send it.
pub fn rsa_encrypted_password(
    password: &[u8],
    scramble: &[u8],
    public_key_pem: &[u8],
) -> Result<Vec<u8>, String> {
    use rsa::pkcs8::DecodePublicKey;
    if scramble.is_empty() {
        return Err("the server sent no scramble".to_owned());
    }
    let pem =
        std::str::from_utf8(public_key_pem).map_err(|_| "the key is not PEM text".to_owned())?;
    let key = rsa::RsaPublicKey::from_public_key_pem(pem.trim_end_matches('\0'))
        .map_err(|error| format!("the key is not an RSA public key: {error}"))?;
    let mut clear = password.to_vec();
    clear.push(0);
    for (i, byte) in clear.iter_mut().enumerate() {
        *byte ^= scramble[i % scramble.len()];
    }
    key.encrypt(
        &mut rand_core_06::OsRng,
        rsa::Oaep::new::<sha1_010::Sha1>(),
        &clear,
    )
    .map_err(|error| format!("RSA encryption failed: {error}"))
}

/// The response `plugin` expects for `password`, if warpdrive speaks that plugin.
pub fn response(plugin: &[u8], password: &[u8], scramble: &[u8]) -> Option<Vec<u8>> {
    match plugin {
        NATIVE => Some(native_response(password, scramble)),
        CACHING_SHA2 => Some(caching_sha2_response(password, scramble)),
        _ => None,
    }
}

/// Whether `response` proves `password` under `plugin`; compared in constant time.
pub fn verify(plugin: &[u8], password: &[u8], scramble: &[u8], response: &[u8]) -> bool {
    match self::response(plugin, password, scramble) {
        Some(expected) => {
            expected.len() == response.len()
                && expected
                    .iter()
                    .zip(response)
                    .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                    == 0
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAMBLE: &[u8; 20] =
        b"\x3a\x2b\x1c\x0d\x4e\x5f\x60\x71\x02\x13\x24\x35\x46\x57\x68\x79\x0a\x1b\x2c\x3d";

    #[test]
    fn native_matches_the_published_construction() {
        let response = native_response(b"secret", SCRAMBLE);
        assert_eq!(response.len(), 20);
        // Unmasking with the scramble gives back SHA1(password), whose SHA1 the server stores.
        let mut hasher = Sha1::new();
        hasher.update(SCRAMBLE);
        hasher.update(Sha1::digest(Sha1::digest(b"secret")));
        let mask = hasher.finalize();
        let stage1: Vec<u8> = response
            .iter()
            .zip(mask.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(stage1, Sha1::digest(b"secret").to_vec());
        assert!(native_response(b"", SCRAMBLE).is_empty());
    }

    #[test]
    fn the_rsa_exchange_decrypts_to_the_password() {
        use rsa::pkcs8::{EncodePublicKey, LineEnding};
        let key = rsa::RsaPrivateKey::new(&mut rand_core_06::OsRng, 1024).expect("key");
        let pem = rsa::RsaPublicKey::from(&key)
            .to_public_key_pem(LineEnding::LF)
            .expect("PEM");
        let sent = rsa_encrypted_password(b"pw", SCRAMBLE, pem.as_bytes()).expect("encrypted");
        let clear = key
            .decrypt(rsa::Oaep::new::<sha1_010::Sha1>(), &sent)
            .expect("decrypted");
        let unmasked: Vec<u8> = clear
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ SCRAMBLE[i % 20])
            .collect();
        assert_eq!(unmasked, b"pw\0");
        assert!(rsa_encrypted_password(b"pw", SCRAMBLE, b"not a key").is_err());
    }

    #[test]
    fn verify_accepts_the_right_password_only() {
        for plugin in [NATIVE, CACHING_SHA2] {
            let good = response(plugin, b"pw", SCRAMBLE).expect("known plugin");
            assert!(verify(plugin, b"pw", SCRAMBLE, &good));
            assert!(!verify(plugin, b"pW", SCRAMBLE, &good));
            assert!(!verify(plugin, b"pw", b"another scramble....", &good));
            assert!(verify(plugin, b"", SCRAMBLE, b""));
        }
        assert_eq!(caching_sha2_response(b"pw", SCRAMBLE).len(), 32);
        assert!(!verify(b"dialog", b"pw", SCRAMBLE, b""));
    }
}
