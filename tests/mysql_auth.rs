//! Authentication both ways and TLS to the origin, with warpdrive's own server side as
//! the origin where MariaDB cannot play it (it has no caching_sha2_password); bad bytes
//! from one client end that client only.

mod common;

use common::mysql::{MYSQL_USER, MysqlDatabase, RawMysql, mysql_deployment};
use common::{PASSWORD, Proxy, small_pool};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use warpdrive::config::{ClientAuth, Deployment, OriginUrl, ServerTls};

fn write_certificate(dir: &std::path::Path) -> (ServerTls, std::path::PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    std::fs::create_dir_all(dir).expect("dir");
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    (
        ServerTls {
            cert: cert.clone(),
            key,
        },
        cert,
    )
}

/// A warpdrive whose origin is the warpdrive at `front` (which asks for
/// caching_sha2_password), with TLS `mode`.
fn chained(front: u16, database: &str, mode: &str, ca: Option<&std::path::Path>) -> Deployment {
    let mut url =
        format!("mysql://{MYSQL_USER}:{PASSWORD}@localhost:{front}/{database}?ssl-mode={mode}");
    if let Some(ca) = ca {
        url.push_str(&format!("&ssl-ca={}", ca.display()));
    }
    let mut deployment = mysql_deployment(database, small_pool(2));
    deployment.origin = OriginUrl::parse(&url).expect("origin URL");
    deployment
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_plugin_works_both_ways_and_tls_to_the_origin_is_verified() {
    let db = MysqlDatabase::create("auth").await;
    let dir = std::env::temp_dir().join(format!("warpdrive-mysql-tls-{}", db.name));
    let (tls, ca) = write_certificate(&dir);
    let mut front = mysql_deployment(&db.name, small_pool(4));
    assert_eq!(front.client_auth, ClientAuth::CachingSha2);
    front.tls = Some(tls);
    let front = Proxy::start(front).await;
    let port = front.addr.port();
    // caching_sha2_password towards the origin, in clear and over verified TLS.
    for (mode, ca) in [
        ("DISABLED", None),
        ("REQUIRED", None),
        ("VERIFY_IDENTITY", Some(ca.as_path())),
    ] {
        let mut back = chained(port, &db.name, mode, ca);
        back.client_auth = ClientAuth::MysqlNative;
        let back = Proxy::start(back).await;
        let mut conn = back.mysql(&db.name).await;
        let answer: Option<i32> = conn.query_first("SELECT 40 + 2").await.expect(mode);
        assert_eq!(answer, Some(42), "{mode}");
        drop(conn);
        back.stop().await;
    }
    // A certificate for another name fails verify-identity with a clear cause.
    let elsewhere = rcgen::generate_simple_self_signed(vec!["elsewhere".to_owned()]).expect("CA");
    let wrong_ca = dir.join("wrong.crt");
    std::fs::write(&wrong_ca, elsewhere.cert.pem()).expect("write");
    let config = warpdrive::config::Config {
        deployments: vec![chained(port, &db.name, "VERIFY_IDENTITY", Some(&wrong_ca))],
        admin: None,
        rules: None,
    };
    let checks = warpdrive::validate::validate(&config).await;
    let failure = checks[0].failure.as_ref().expect("refused");
    assert_eq!(
        failure.cause.name(),
        "certificate_invalid",
        "{}",
        failure.message
    );
    // validate names the cause for MySQL origins too.
    let mut wrong_password = chained(port, &db.name, "REQUIRED", None);
    wrong_password.origin.password = Some("not the password".to_owned());
    let mut unknown_database = mysql_deployment("wd_no_such_database", small_pool(1));
    unknown_database.name = "missing".to_owned();
    let config = warpdrive::config::Config {
        deployments: vec![wrong_password, unknown_database],
        admin: None,
        rules: None,
    };
    let causes: Vec<&str> = warpdrive::validate::validate(&config)
        .await
        .iter()
        .map(|check| check.failure.as_ref().map_or("ok", |f| f.cause.name()))
        .collect();
    assert_eq!(causes, vec!["bad_credentials", "database_not_found"]);
    // A wrong password gets 1045 from warpdrive itself.
    let wrong = OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(MYSQL_USER))
        .pass(Some("not the password"))
        .prefer_socket(false);
    match Conn::new(wrong).await {
        Err(mysql_async::Error::Server(error)) => {
            assert_eq!(
                (error.code, error.state.as_str()),
                (1045, "28000"),
                "{error:?}"
            );
            assert!(
                error.message.contains("Access denied for user 'root'"),
                "{error:?}"
            );
        }
        Err(other) => panic!("expected ERR 1045, got {other}"),
        Ok(_) => panic!("a wrong password logged in"),
    }
    front.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    db.drop_now().await;
}

#[tokio::test]
async fn bad_bytes_end_that_client_only() {
    let db = MysqlDatabase::create("garbage").await;
    let mut deployment = mysql_deployment(&db.name, small_pool(2));
    deployment.max_message_bytes = 1 << 20;
    let proxy = Proxy::start(deployment).await;
    let mut bystander = proxy.mysql(&db.name).await;
    // Garbage instead of a handshake response.
    let mut garbage = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    let mut raw = RawMysql::from_stream(&mut garbage);
    let _greeting = raw.read().await;
    raw.write_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let refusal = raw.read().await;
    assert_eq!(refusal.first(), Some(0xFF), "an ERR packet");
    assert!(String::from_utf8_lossy(&refusal.payload).contains("MySQL protocol"));
    assert!(raw.try_read().await.is_none(), "then the connection closes");
    // An oversized packet after login.
    let mut big = RawMysql::login(proxy.addr, Some(&db.name), 0).await;
    big.write_raw(&[0xff, 0xff, 0x7f, 0x00, 0x03]).await;
    let refusal = big.read().await;
    assert_eq!(refusal.first(), Some(0xFF));
    assert!(String::from_utf8_lossy(&refusal.payload).contains("exceeds the limit"));
    assert!(big.try_read().await.is_none());
    // A statement command without its id.
    let mut short = RawMysql::login(proxy.addr, Some(&db.name), 0).await;
    let refusal = short.command(&[0x17, 0x01]).await;
    assert_eq!(refusal.first(), Some(0xFF));
    // The bystander never noticed.
    let answer: Option<i32> = bystander.query_first("SELECT 1").await.expect("bystander");
    assert_eq!(answer, Some(1));
    drop(bystander);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn the_greeting_says_what_the_origin_says_and_an_unknown_database_is_refused() {
    use warpdrive::wire::mysql::handshake::Greeting;
    let db = MysqlDatabase::create("greeting").await;
    let proxy = Proxy::start(mysql_deployment(&db.name, small_pool(1))).await;
    let mut greetings = Vec::new();
    for addr in [proxy.addr, "127.0.0.1:3306".parse().expect("addr")] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut raw = RawMysql::from_stream(&mut tcp);
        greetings.push(Greeting::decode(raw.read().await.payload).expect("greeting"));
    }
    let (ours, origin) = (&greetings[0], &greetings[1]);
    assert_eq!(ours.server_version, origin.server_version);
    assert_eq!(ours.collation, origin.collation);
    assert_eq!(ours.status, origin.status);
    assert_eq!(&ours.auth_plugin[..], b"caching_sha2_password");
    assert_eq!(
        ours.capabilities & warpdrive::wire::mysql::caps::COMPRESS,
        0,
        "no compression"
    );
    let missing = Conn::new(proxy.mysql_opts(Some("wd_no_such_database"))).await;
    match missing {
        Err(mysql_async::Error::Server(error)) => assert_eq!(error.code, 1049, "{error:?}"),
        Err(other) => panic!("expected ERR 1049, got {other}"),
        Ok(_) => panic!("logged in to a database that does not exist"),
    }
    proxy.stop().await;
    db.drop_now().await;
}

/// A MySQL server of the test's own that asks for caching_sha2_password's full
/// authentication (as a server does whose cache lacks the user): over TLS the password
/// in clear, without TLS under its RSA public key (a password in clear without TLS is
/// refused). It answers every later command with OK.
async fn full_auth_origin(password: &'static str, tls: tokio_rustls::TlsAcceptor) -> u16 {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
    use warpdrive::wire::mysql::caps;
    use warpdrive::wire::mysql::handshake::{Greeting, HandshakeResponse};
    use warpdrive::wire::mysql::reply::{ErrPacket, OkPacket};

    const SCRAMBLE: &[u8; 20] = b"0123456789abcdefghij";

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        raw: &mut RawMysql<S>,
        password: &str,
        mut seq: u8,
        key: Option<&rsa::RsaPrivateKey>,
    ) {
        use rsa::pkcs8::{EncodePublicKey, LineEnding};
        raw.write(seq, &[0x01, 0x04]).await;
        let mut sent = raw.read().await;
        seq = sent.seq + 1;
        let clear = match key {
            None => sent.payload.to_vec(),
            Some(key) => {
                assert_eq!(
                    &sent.payload[..],
                    &[0x02],
                    "without TLS: a request for the key, never the password"
                );
                let pem = rsa::RsaPublicKey::from(key)
                    .to_public_key_pem(LineEnding::LF)
                    .expect("PEM");
                raw.write(seq, &[&[0x01][..], pem.as_bytes()].concat())
                    .await;
                sent = raw.read().await;
                seq = sent.seq + 1;
                let masked = key
                    .decrypt(rsa::Oaep::new::<sha1_010::Sha1>(), &sent.payload)
                    .unwrap_or_default();
                masked
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ SCRAMBLE[i % 20])
                    .collect()
            }
        };
        if clear[..] != [password.as_bytes(), b"\0"].concat()[..] {
            let error = ErrPacket {
                code: 1045,
                sql_state: *b"28000",
                message: "Access denied".into(),
            };
            raw.write(seq, &error.encode()).await;
            return;
        }
        let ok = OkPacket {
            status: 2,
            ..OkPacket::default()
        }
        .encode(caps::SPOKEN);
        raw.write(seq, &ok).await;
        while let Some(command) = raw.try_read().await {
            if command.first() == Some(0x01) {
                return;
            }
            raw.write(1, &ok).await;
        }
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                let mut raw = RawMysql::from_stream(&mut tcp);
                let greeting = Greeting {
                    server_version: "8.0.40-fake".into(),
                    connection_id: 1,
                    scramble: bytes::Bytes::from_static(SCRAMBLE),
                    capabilities: caps::SPOKEN | caps::SSL,
                    collation: 45,
                    status: 2,
                    auth_plugin: bytes::Bytes::from_static(b"caching_sha2_password"),
                };
                raw.write(0, &greeting.encode()).await;
                drop(raw);
                // Exactly the first packet: a TLS handshake may follow it at once.
                let mut header = [0u8; 4];
                tcp.read_exact(&mut header).await.expect("header");
                let mut payload = vec![0u8; usize::from(header[0]) | usize::from(header[1]) << 8];
                tcp.read_exact(&mut payload).await.expect("payload");
                let request = HandshakeResponse::decode(payload.into()).expect("response");
                if !request.is_ssl_request() {
                    let key = rsa::RsaPrivateKey::new(&mut rand_core_06::OsRng, 1024).expect("key");
                    let mut raw = RawMysql::from_stream(&mut tcp);
                    serve(&mut raw, password, header[3] + 1, Some(&key)).await;
                    return;
                }
                let stream = tls.accept(tcp).await.expect("TLS");
                let mut raw = RawMysql {
                    stream,
                    buffer: bytes::BytesMut::new(),
                    capabilities: 0,
                };
                let response = raw.read().await;
                serve(&mut raw, password, response.seq + 1, None).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caching_sha2_full_authentication_over_tls_or_with_the_servers_rsa_key() {
    let dir = std::env::temp_dir().join(format!("warpdrive-full-auth-{}", std::process::id()));
    let (tls, _) = write_certificate(&dir);
    let config = warpdrive::tls::server_config(&tls.cert, &tls.key).expect("server TLS");
    let port = full_auth_origin("s3cret", tokio_rustls::TlsAcceptor::from(config)).await;
    let check = |password: &str, mode: &str| {
        let origin = format!("mysql://app:{password}@127.0.0.1:{port}/db?ssl-mode={mode}");
        let deployment = Deployment::from_origin(
            "127.0.0.1:0".parse().expect("addr"),
            OriginUrl::parse(&origin).expect("URL"),
        );
        warpdrive::config::Config {
            deployments: vec![deployment],
            admin: None,
            rules: None,
        }
    };
    let cause = |checks: Vec<warpdrive::validate::Check>| {
        checks[0].failure.as_ref().map_or("ok".to_owned(), |f| {
            format!("{}: {}", f.cause.name(), f.message)
        })
    };
    for mode in ["REQUIRED", "DISABLED"] {
        let right = cause(warpdrive::validate::validate(&check("s3cret", mode)).await);
        assert_eq!(right, "ok", "{mode}");
        let wrong = cause(warpdrive::validate::validate(&check("nope", mode)).await);
        assert!(wrong.starts_with("bad_credentials"), "{mode}: {wrong}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
