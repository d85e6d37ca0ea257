//! The origin URL: `postgres://user:password@host:port/database?sslmode=…`, or
//! `mysql://` (`mariadb://`) `user:password@host:port/database?ssl-mode=…`. Its scheme
//! picks the protocol.

use std::path::PathBuf;

use crate::protocol::Protocol;

/// TLS policy towards the origin, as libpq's `sslmode` (MySQL's `ssl-mode` DISABLED,
/// PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY map one to one).
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
    /// Port (default 5432, MySQL 3306).
    pub port: u16,
    /// Origin user.
    pub user: String,
    /// Origin password, if any.
    pub password: Option<String>,
    /// Default database (PostgreSQL's default: the user name, as libpq does; MySQL's:
    /// none, the empty string).
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
        let scheme = match self.protocol {
            Protocol::Postgres => "postgres",
            Protocol::Mysql => "mysql",
        };
        write!(
            f,
            "{scheme}://{}@{}:{}/{}",
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
    /// Where warpdrive listens by default in front of `origin` (an origin URL, valid or
    /// not): 127.0.0.1:6432, or 127.0.0.1:6033 before a MySQL origin.
    pub fn default_listen(origin: &str) -> std::net::SocketAddr {
        let mysql = ["mysql:", "mariadb:"].iter().any(|scheme| {
            origin
                .get(..scheme.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        });
        std::net::SocketAddr::from(([127, 0, 0, 1], if mysql { 6033 } else { 6432 }))
    }

    /// Parses a `postgres://`, `postgresql://`, `mysql://` or `mariadb://` URL. The error
    /// says what is wrong without repeating the password.
    pub fn parse(text: &str) -> Result<OriginUrl, String> {
        let url = url::Url::parse(text).map_err(|error| {
            format!(
                "not a valid URL ({error}); expected postgres://user:password@host:port/database"
            )
        })?;
        let protocol = match url.scheme() {
            "postgres" | "postgresql" => Protocol::Postgres,
            "mysql" | "mariadb" => Protocol::Mysql,
            other => {
                return Err(format!(
                    "scheme {other:?} is not supported; expected postgres://user:password@host:port/database or mysql://user:password@host:port/database"
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
        let database = match (url.path().trim_start_matches('/'), protocol) {
            ("", Protocol::Postgres) => user.clone(),
            ("", Protocol::Mysql) => String::new(),
            (path, _) => decode(path, "database")?,
        };
        let (ssl_mode, ssl_root_cert) = match protocol {
            Protocol::Postgres => postgres_tls(&url)?,
            Protocol::Mysql => mysql_tls(&url)?,
        };
        let default_port = match protocol {
            Protocol::Postgres => 5432,
            Protocol::Mysql => 3306,
        };
        Ok(OriginUrl {
            protocol,
            host,
            port: url.port().unwrap_or(default_port),
            user,
            password,
            database,
            ssl_mode,
            ssl_root_cert,
        })
    }
}

fn postgres_tls(url: &url::Url) -> Result<(SslMode, Option<PathBuf>), String> {
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
    Ok((ssl_mode, ssl_root_cert))
}

/// MySQL's `ssl-mode` (as mysql and mysqlsh spell it; case and `-`/`_` do not matter) and
/// `ssl-ca`.
fn mysql_tls(url: &url::Url) -> Result<(SslMode, Option<PathBuf>), String> {
    let mut ssl_mode = SslMode::Prefer;
    let mut ssl_root_cert = None;
    for (key, value) in url.query_pairs() {
        match key.replace('_', "-").to_ascii_lowercase().as_str() {
            "ssl-mode" => {
                ssl_mode = match value.replace('-', "_").to_ascii_uppercase().as_str() {
                    "DISABLED" => SslMode::Disable,
                    "PREFERRED" => SslMode::Prefer,
                    "REQUIRED" => SslMode::Require,
                    "VERIFY_CA" => SslMode::VerifyCa,
                    "VERIFY_IDENTITY" => SslMode::VerifyFull,
                    _ => {
                        return Err(format!(
                            "ssl-mode={value} is not one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY"
                        ));
                    }
                }
            }
            "ssl-ca" => ssl_root_cert = Some(PathBuf::from(value.as_ref())),
            _ => {
                return Err(format!(
                    "origin URL parameter {key:?} is not supported (supported: ssl-mode, ssl-ca)"
                ));
            }
        }
    }
    Ok((ssl_mode, ssl_root_cert))
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
    fn parses_mysql_and_mariadb_urls() {
        let url =
            OriginUrl::parse("mysql://app:pw@db:3307/shop?ssl-mode=VERIFY_IDENTITY&ssl-ca=/ca.pem")
                .expect("valid");
        assert_eq!(url.protocol, Protocol::Mysql);
        assert_eq!((url.port, url.database.as_str()), (3307, "shop"));
        assert_eq!(url.ssl_mode, SslMode::VerifyFull);
        assert_eq!(url.ssl_root_cert, Some(PathBuf::from("/ca.pem")));
        let minimal = OriginUrl::parse("mariadb://root@127.0.0.1").expect("valid");
        assert_eq!((minimal.port, minimal.database.as_str()), (3306, ""));
        assert_eq!(minimal.ssl_mode, SslMode::Prefer);
        let spelled = OriginUrl::parse("mysql://u@h/d?ssl_mode=verify-ca").expect("valid");
        assert_eq!(spelled.ssl_mode, SslMode::VerifyCa);
        assert_eq!(minimal.to_string(), "mysql://root@127.0.0.1:3306/");
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
        assert!(
            OriginUrl::parse("mysql://u@h/d?ssl-mode=sometimes")
                .unwrap_err()
                .contains("VERIFY_IDENTITY")
        );
        assert!(
            OriginUrl::parse("mysql://u@h/d?sslmode=require")
                .unwrap_err()
                .contains("ssl-mode, ssl-ca")
        );
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
