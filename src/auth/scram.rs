//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL uses it, without channel binding.
//!
//! [`ScramSecret`] is what a server keeps per user (derived once from the configured
//! password, with a random salt); [`ServerExchange`] verifies a client; [`ClientExchange`]
//! authenticates warpdrive to an origin. PostgreSQL ignores the SCRAM user name (it uses
//! the startup packet's), and so does warpdrive. Passwords are used as given: SASLprep
//! normalisation only changes non-ASCII passwords, which the configuration should spell
//! in their normalised form.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngExt;
use sha2::{Digest, Sha256};

/// The SASL mechanism name.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// Iterations used for secrets warpdrive derives (PostgreSQL's default).
pub const ITERATIONS: u32 = 4096;
const NONCE_LEN: usize = 24;

/// A SCRAM exchange that cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// A message does not follow RFC 5802's grammar.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding, which warpdrive did not offer.
    #[error("SCRAM channel binding was requested but is not supported")]
    ChannelBinding,
    /// The nonce changed between messages.
    #[error("SCRAM nonce mismatch")]
    Nonce,
    /// The client's proof is wrong: wrong password.
    #[error("SCRAM proof does not match: wrong password")]
    BadProof,
    /// The server's signature is wrong: the origin does not know the password.
    #[error("the server's SCRAM signature does not match")]
    BadServerSignature,
    /// The server reported an error (`e=…`).
    #[error("the server refused SCRAM authentication: {0}")]
    ServerError(String),
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// RFC 5802 `Hi()`: PBKDF2 with HMAC-SHA-256 and one block.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &first);
    let mut result = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        result.iter_mut().zip(u).for_each(|(r, b)| *r ^= b);
    }
    result
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn nonce() -> String {
    let mut rng = rand::rng();
    (0..NONCE_LEN)
        .map(|_| {
            // Printable ASCII except ',' (RFC 5802 `printable`).
            let c = rng.random_range(0x21u8..0x7f);
            if c == b',' { '~' } else { char::from(c) }
        })
        .collect()
}

/// What a server stores to verify one user's password.
#[derive(Clone)]
pub struct ScramSecret {
    salt: Vec<u8>,
    iterations: u32,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramSecret(<redacted>)")
    }
}

/// A password as SCRAM hashes it: normalised with SASLprep (RFC 4013), as PostgreSQL
/// does; a password SASLprep refuses (prohibited characters) is used as it is, as
/// PostgreSQL does too.
fn prepared(password: &str) -> std::borrow::Cow<'_, str> {
    stringprep::saslprep(password).unwrap_or(std::borrow::Cow::Borrowed(password))
}

impl ScramSecret {
    /// Derives a secret from a password with a fresh random salt.
    pub fn new(password: &str) -> ScramSecret {
        let mut salt = vec![0u8; 16];
        rand::rng().fill(&mut salt[..]);
        ScramSecret::with_salt(password, salt, ITERATIONS)
    }

    /// The secret warpdrive answers a user it does not know with: its salt derived from
    /// `server_secret` and the name, so the same for every attempt (a random one would
    /// tell unknown users from known ones), and keys no password matches.
    pub fn mock(server_secret: &[u8; 32], user: &str) -> ScramSecret {
        let keyed = |label: &str| hmac(server_secret, format!("{label}:{user}").as_bytes());
        ScramSecret {
            salt: keyed("salt")[..16].to_vec(),
            iterations: ITERATIONS,
            stored_key: keyed("stored key"),
            server_key: keyed("server key"),
        }
    }

    fn with_salt(password: &str, salt: Vec<u8>, iterations: u32) -> ScramSecret {
        let salted = salted_password(prepared(password).as_bytes(), &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        ScramSecret {
            salt,
            iterations,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }
}

/// Splits `key=value` attributes; returns the value of the attribute at `index` if its
/// key is `key`.
fn attribute<'a>(parts: &[&'a str], index: usize, key: char) -> Result<&'a str, ScramError> {
    parts
        .get(index)
        .and_then(|part| part.strip_prefix(key))
        .and_then(|rest| rest.strip_prefix('='))
        .ok_or(ScramError::Malformed("missing or misplaced attribute"))
}

/// The server side of one exchange, after the client's first message.
pub struct ServerExchange {
    secret: ScramSecret,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl ServerExchange {
    /// Reads the client-first-message; returns the exchange and the server-first-message.
    pub fn start(
        secret: &ScramSecret,
        client_first: &[u8],
    ) -> Result<(ServerExchange, String), ScramError> {
        let text =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let mut pieces = text.splitn(3, ',');
        let flag = pieces.next().unwrap_or("");
        let authzid = pieces
            .next()
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        let bare = pieces
            .next()
            .ok_or(ScramError::Malformed("no client-first-bare"))?;
        match flag {
            "n" | "y" => {}
            flag if flag.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("bad channel binding flag")),
        }
        let bare_parts: Vec<&str> = bare.split(',').collect();
        attribute(&bare_parts, 0, 'n')?;
        let client_nonce = attribute(&bare_parts, 1, 'r')?;
        if client_nonce.is_empty() {
            return Err(ScramError::Malformed("empty nonce"));
        }
        let nonce = format!("{client_nonce}{}", nonce());
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&secret.salt),
            secret.iterations
        );
        let exchange = ServerExchange {
            secret: secret.clone(),
            gs2_header: format!("{flag},{authzid},"),
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((exchange, server_first))
    }

    /// Verifies the client-final-message; returns the server-final-message.
    pub fn finish(self, client_final: &[u8]) -> Result<String, ScramError> {
        let text =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let parts: Vec<&str> = without_proof.split(',').collect();
        let binding = attribute(&parts, 0, 'c')?;
        if BASE64.decode(binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(ScramError::ChannelBinding);
        }
        if attribute(&parts, 1, 'r')? != self.nonce {
            return Err(ScramError::Nonce);
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        if proof.len() != 32 {
            return Err(ScramError::BadProof);
        }
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let signature = hmac(&self.secret.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        let stored_key: [u8; 32] = Sha256::digest(&client_key).into();
        if !constant_time_eq(&stored_key, &self.secret.stored_key) {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac(&self.secret.server_key, auth_message.as_bytes());
        Ok(format!("v={}", BASE64.encode(server_signature)))
    }
}

/// The client side of one exchange.
pub struct ClientExchange {
    password: String,
    client_first_bare: String,
    client_nonce: String,
    expected_server_signature: Option<[u8; 32]>,
}

impl std::fmt::Debug for ClientExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientExchange(<redacted>)")
    }
}

impl ClientExchange {
    /// Starts an exchange; returns it and the client-first-message.
    pub fn new(password: &str) -> (ClientExchange, String) {
        ClientExchange::with_nonce(password, nonce())
    }

    fn with_nonce(password: &str, client_nonce: String) -> (ClientExchange, String) {
        let client_first_bare = format!("n=,r={client_nonce}");
        let first = format!("n,,{client_first_bare}");
        let exchange = ClientExchange {
            password: password.to_owned(),
            client_first_bare,
            client_nonce,
            expected_server_signature: None,
        };
        (exchange, first)
    }

    /// Answers the server-first-message with the client-final-message.
    pub fn respond(&mut self, server_first: &[u8]) -> Result<String, ScramError> {
        let text =
            std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let parts: Vec<&str> = text.split(',').collect();
        let nonce = attribute(&parts, 0, 'r')?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(ScramError::Nonce);
        }
        let salt = BASE64
            .decode(attribute(&parts, 1, 's')?)
            .map_err(|_| ScramError::Malformed("salt is not base64"))?;
        let iterations: u32 = attribute(&parts, 2, 'i')?
            .parse()
            .ok()
            .filter(|&i| i > 0)
            .ok_or(ScramError::Malformed("bad iteration count"))?;
        let salted = salted_password(prepared(&self.password).as_bytes(), &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c={},r={nonce}", BASE64.encode("n,,"));
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(&salted, b"Server Key");
        self.expected_server_signature = Some(hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)))
    }

    /// Checks the server-final-message: the server must prove it knows the password too.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text =
            std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(ScramError::ServerError(error.to_owned()));
        }
        let signature = text
            .strip_prefix("v=")
            .and_then(|v| BASE64.decode(v.split(',').next().unwrap_or("")).ok())
            .ok_or(ScramError::Malformed("no server signature"))?;
        let expected = self
            .expected_server_signature
            .ok_or(ScramError::Malformed("server-final before server-first"))?;
        if constant_time_eq(&signature, &expected) {
            Ok(())
        } else {
            Err(ScramError::BadServerSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_prepared_with_saslprep() {
        // U+2168 ROMAN NUMERAL NINE normalises (NFKC) to "IX".
        let raw = ScramSecret::with_salt("IX-\u{2168}", vec![7; 16], 4096);
        let normalised = ScramSecret::with_salt("IX-IX", vec![7; 16], 4096);
        assert_eq!(raw.stored_key, normalised.stored_key);
        // A prohibited character (U+0007) leaves the password as it is.
        assert_eq!(prepared("a\u{7}b"), "a\u{7}b");
    }

    #[test]
    fn unknown_users_get_a_stable_salt_of_their_own() {
        let secret = [3u8; 32];
        let first = ScramSecret::mock(&secret, "nobody");
        assert_eq!(first.salt, ScramSecret::mock(&secret, "nobody").salt);
        assert_ne!(first.salt, ScramSecret::mock(&secret, "somebody").salt);
        assert_ne!(first.salt, ScramSecret::mock(&[4u8; 32], "nobody").salt);
    }

    /// RFC 7677 section 3 test vector (user "user", password "pencil").
    #[test]
    fn rfc7677_vector() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("base64");
        let secret = ScramSecret::with_salt("pencil", salt, 4096);
        let (mut client, first) =
            ClientExchange::with_nonce("pencil", "rOprNGfwEbeRWgbNEkqO".to_owned());
        assert_eq!(first, "n,,n=,r=rOprNGfwEbeRWgbNEkqO");
        // The RFC's messages carry n=user; PostgreSQL sends n= and ignores it, which
        // changes the auth message, so check the RFC values through the server side.
        let rfc_client_first = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
        let (mut server, _) = ServerExchange::start(&secret, rfc_client_first).expect("starts");
        server.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_owned();
        server.server_first = format!("r={},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", server.nonce);
        let server_final = server
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .expect("the RFC proof verifies");
        assert_eq!(
            server_final,
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        // And our client computes a proof the server accepts.
        let (mut fresh, _) = ServerExchange::start(&secret, first.as_bytes()).expect("starts");
        fresh.server_first =
            "r=rOprNGfwEbeRWgbNEkqOsuffix,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".to_string();
        fresh.nonce = "rOprNGfwEbeRWgbNEkqOsuffix".to_owned();
        let final_message = client
            .respond(fresh.server_first.as_bytes())
            .expect("responds");
        let server_final = fresh.finish(final_message.as_bytes()).expect("verifies");
        client
            .verify(server_final.as_bytes())
            .expect("server proven");
    }

    #[test]
    fn full_exchange_and_wrong_password() {
        let secret = ScramSecret::new("correct horse");
        for (password, ok) in [("correct horse", true), ("battery staple", false)] {
            let (mut client, first) = ClientExchange::new(password);
            let (server, server_first) =
                ServerExchange::start(&secret, first.as_bytes()).expect("starts");
            let client_final = client.respond(server_first.as_bytes()).expect("responds");
            match server.finish(client_final.as_bytes()) {
                Ok(server_final) => {
                    assert!(ok);
                    client
                        .verify(server_final.as_bytes())
                        .expect("server proven");
                }
                Err(error) => {
                    assert!(!ok);
                    assert_eq!(error, ScramError::BadProof);
                }
            }
        }
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        let secret = ScramSecret::new("pw");
        for first in [
            &b""[..],
            b"n",
            b"n,,",
            b"x,,n=,r=a",
            b"p=tls-unique,,n=,r=a",
            b"n,,n=,r=",
            b"\xff",
        ] {
            assert!(ServerExchange::start(&secret, first).is_err(), "{first:?}");
        }
        let (server, _) = ServerExchange::start(&secret, b"n,,n=,r=abc").expect("starts");
        assert!(server.finish(b"c=biws,r=wrong,p=AAAA").is_err());
        let (mut client, _) = ClientExchange::new("pw");
        assert_eq!(
            client.respond(b"r=other,s=AAAA,i=4096"),
            Err(ScramError::Nonce)
        );
        assert!(client.verify(b"e=invalid-proof").is_err());
    }
}
