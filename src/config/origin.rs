//! The origin URL: `postgres://user:password@host:port/database?sslmode=…`. Its scheme
//! picks the protocol.

use std::path::PathBuf;

use crate::protocol::Protocol;

/// TLS policy towards the origin, as libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, without certificate checks (the default).
    Prefer,
    /// TLS or fail, without certificate checks.
    Require,
    /// TLS with a certificate signed by a trusted CA.
    VerifyCa,
    /// TLS with a trusted certificate whose name matches the host.
    VerifyFull,
}

/// A parsed origin URL.
#[derive(Clone, PartialEq, Eq)]
pub struct OriginUrl {
    /// The protocol the origin speaks, from the URL's scheme.
    pub protocol: Protocol,
    /// Host name or address.
    pub host: String,
    /// Port (default 5432).
    pub port: u16,
    /// Origin user.
    pub user: String,
    /// Origin password, if any.
    pub password: Option<String>,
    /// Default database (default: the user name, as libpq does).
    pub database: String,
    /// TLS policy.
    pub ssl_mode: SslMode,
    /// CA certificates (PEM) for verify-ca / verify-full; default: the system's.
    pub ssl_root_cert: Option<PathBuf>,
}

impl std::fmt::Debug for OriginUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for OriginUrl {
    /// The URL without its password, for logs and messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }
}

fn decode(part: &str, what: &str) -> Result<String, String> {
    percent_decode(part)
        .ok_or_else(|| format!("the {what} in the origin URL is not valid percent-encoded UTF-8"))
}

fn percent_decode(part: &str) -> Option<String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = part.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl OriginUrl {
    /// Parses a `postgres://` or `postgresql://` URL. The error says what is wrong without
    /// repeating the password.
    pub fn parse(text: &str) -> Result<OriginUrl, String> {
        let url = url::Url::parse(text).map_err(|error| {
            format!(
                "not a valid URL ({error}); expected postgres://user:password@host:port/database"
            )
        })?;
        let protocol = match url.scheme() {
            "postgres" | "postgresql" => Protocol::Postgres,
            "mysql" | "mariadb" => {
                return Err(
                    "MySQL origins are not supported yet; this warpdrive serves PostgreSQL origins (postgres://user:password@host:port/database)"
                        .to_owned(),
                );
            }
            other => {
                return Err(format!(
                    "scheme {other:?} is not supported; expected postgres://user:password@host:port/database"
                ));
            }
        };
        let host = url
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or("the origin URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let user = decode(url.username(), "user")?;
        if user.is_empty() {
            return Err(
                "the origin URL has no user (postgres://user:password@host/database)".to_owned(),
            );
        }
        let password = url.password().map(|p| decode(p, "password")).transpose()?;
        let database = match url.path().trim_start_matches('/') {
            "" => user.clone(),
            path => decode(path, "database")?,
        };
        let mut ssl_mode = SslMode::Prefer;
        let mut ssl_root_cert = None;
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "sslmode" => {
                    ssl_mode = match value.as_ref() {
                        "disable" => SslMode::Disable,
                        "prefer" | "allow" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(format!(
                                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                            ));
                        }
                    }
                }
                "sslrootcert" => ssl_root_cert = Some(PathBuf::from(value.as_ref())),
                other => {
                    return Err(format!(
                        "origin URL parameter {other:?} is not supported (supported: sslmode, sslrootcert)"
                    ));
                }
            }
        }
        Ok(OriginUrl {
            protocol,
            host,
            port: url.port().unwrap_or(5432),
            user,
            password,
            database,
            ssl_mode,
            ssl_root_cert,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let url = OriginUrl::parse(
            "postgres://app:p%40ss@10.0.0.5:6543/shop?sslmode=verify-full&sslrootcert=/ca.pem",
        )
        .expect("valid");
        assert_eq!(url.protocol, Protocol::Postgres);
        assert_eq!(url.host, "10.0.0.5");
        assert_eq!(url.port, 6543);
        assert_eq!(url.user, "app");
        assert_eq!(url.password.as_deref(), Some("p@ss"));
        assert_eq!(url.database, "shop");
        assert_eq!(url.ssl_mode, SslMode::VerifyFull);
        assert_eq!(url.ssl_root_cert, Some(PathBuf::from("/ca.pem")));
        let minimal = OriginUrl::parse("postgresql://bob@localhost").expect("valid");
        assert_eq!((minimal.port, minimal.database.as_str()), (5432, "bob"));
        assert_eq!(minimal.password, None);
        assert_eq!(minimal.ssl_mode, SslMode::Prefer);
        let plus = OriginUrl::parse("postgres://u:a+b@h/d").expect("valid");
        assert_eq!(plus.password.as_deref(), Some("a+b"));
    }

    #[test]
    fn display_hides_the_password() {
        let url = OriginUrl::parse("postgres://app:hunter2@db/shop").expect("valid");
        assert_eq!(url.to_string(), "postgres://app@db:5432/shop");
        assert!(!format!("{url:?}").contains("hunter2"));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(
            OriginUrl::parse("redis://u@h/d")
                .unwrap_err()
                .contains("scheme \"redis\"")
        );
        for mysql in ["mysql://u@h/d", "mariadb://u:p@h:3306/d"] {
            let error = OriginUrl::parse(mysql).unwrap_err();
            assert!(
                error.contains("MySQL origins are not supported yet"),
                "{error}"
            );
        }
        assert!(
            OriginUrl::parse("postgres://h/d")
                .unwrap_err()
                .contains("no user")
        );
        assert!(
            OriginUrl::parse("postgres://u@h/d?sslmode=maybe")
                .unwrap_err()
                .contains("sslmode")
        );
        assert!(
            OriginUrl::parse("postgres://u@h/d?gssencmode=x")
                .unwrap_err()
                .contains("gssencmode")
        );
        let error = OriginUrl::parse("postgres://u:secret@h:notaport/d").unwrap_err();
        assert!(!error.contains("secret"), "{error}");
    }
}
