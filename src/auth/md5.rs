//! PostgreSQL's MD5 password scheme: `"md5" + hex(md5(hex(md5(password + user)) + salt))`.

use md5::{Digest, Md5};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The response to AuthenticationMD5Password.
pub fn md5_response(user: &str, password: &str, salt: [u8; 4]) -> String {
    let inner = hex(&Md5::new()
        .chain_update(password.as_bytes())
        .chain_update(user.as_bytes())
        .finalize());
    let outer = Md5::new()
        .chain_update(inner.as_bytes())
        .chain_update(salt)
        .finalize();
    format!("md5{}", hex(&outer))
}

/// Whether a client's PasswordMessage answers the salt for this user and password, in
/// constant time.
pub fn verify_md5(user: &str, password: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let expected = md5_response(user, password, salt);
    super::scram::constant_time_eq(expected.as_bytes(), response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_postgres() {
        // Value computed by PostgreSQL's own algorithm (also used by libpq's tests).
        assert_eq!(
            md5_response("md5_user", "password", [0x2a, 0x3d, 0x8f, 0xe0]),
            "md562af4dd09bbb41884907a838a3233294"
        );
    }

    #[test]
    fn verification() {
        let salt = [1, 2, 3, 4];
        let good = md5_response("u", "p", salt);
        assert!(verify_md5("u", "p", salt, good.as_bytes()));
        assert!(!verify_md5("u", "q", salt, good.as_bytes()));
        assert!(!verify_md5("u", "p", salt, b"md5"));
    }
}
