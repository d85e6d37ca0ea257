//! What real drivers rely on: authentication, startup parameters, session settings
//! across pooled connections, pipelining, statement lifecycle, pinning, malformed input.

mod common;

use std::time::Duration;

use common::{PASSWORD, Proxy, TestDatabase};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::{AsyncMessage, NoTls, SimpleQueryMessage};
use warpdrive::config::ClientAuth;

/// The error of a connection attempt that must fail.
async fn refused(url: &str) -> tokio_postgres::Error {
    match tokio_postgres::connect(url, NoTls).await {
        Ok(_) => panic!("warpdrive accepted a connection it must refuse"),
        Err(error) => error,
    }
}

fn first_value(messages: &[SimpleQueryMessage]) -> String {
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("a row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_28p01_and_nothing_else() {
    let db = TestDatabase::create("auth").await;
    let proxy = Proxy::for_database(&db, 1).await;
    let url = proxy.url(&db.name).replace(PASSWORD, "not-the-password");
    let error = refused(&url).await;
    let db_error = error.as_db_error().expect("a server error");
    assert_eq!(db_error.code().code(), "28P01");
    assert_eq!(
        db_error.message(),
        "password authentication failed for user \"postgres\""
    );
    let unknown = proxy.url(&db.name).replace("user=postgres", "user=nobody");
    let error = refused(&unknown).await;
    assert_eq!(
        error.as_db_error().expect("server error").code().code(),
        "28P01"
    );
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_authentication() {
    let db = TestDatabase::create("md5").await;
    let mut deployment = common::deployment(&db.name, common::small_pool(1));
    deployment.client_auth = ClientAuth::Md5;
    let proxy = Proxy::start(deployment).await;
    let client = proxy.connect(&db.name).await;
    assert_eq!(
        client
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    let wrong = proxy.url(&db.name).replace(PASSWORD, "nope");
    let error = refused(&wrong).await;
    assert_eq!(
        error.as_db_error().expect("server error").code().code(),
        "28P01"
    );
    drop(client);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_are_served_by_their_own_pools_or_refused() {
    let db = TestDatabase::create("dbs").await;
    let other = TestDatabase::create("dbs_other").await;
    let mut deployment = common::deployment(&db.name, common::small_pool(1));
    deployment.databases = Some(vec![
        db.name.clone(),
        other.name.clone(),
        "wd_does_not_exist".into(),
    ]);
    let proxy = Proxy::start(deployment).await;
    let client = proxy.connect(&other.name).await;
    let current: String = client
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(current, other.name);
    let refused = proxy
        .connect_checked("postgres")
        .await
        .expect_err("not allowed");
    let refused = refused.as_db_error().expect("server error");
    assert_eq!(refused.code().code(), "3D000");
    assert!(
        refused.message().contains("not served"),
        "{}",
        refused.message()
    );
    let missing = proxy
        .connect_checked("wd_does_not_exist")
        .await
        .expect_err("missing");
    assert_eq!(
        missing.as_db_error().expect("server error").code().code(),
        "3D000"
    );
    drop(client);
    proxy.stop().await;
    other.drop_now().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_are_honoured_and_reported() {
    let db = TestDatabase::create("startup").await;
    let proxy = Proxy::for_database(&db, 1).await;
    let url = format!(
        "{} application_name=reporting options='-c search_path=app,public -c statement_timeout=1234'",
        proxy.url(&db.name)
    );
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let shown = |sql: &'static str| {
        let client = &client;
        async move { first_value(&client.simple_query(sql).await.unwrap()) }
    };
    assert_eq!(shown("SHOW search_path").await, "app,public");
    assert_eq!(shown("SHOW statement_timeout").await, "1234ms");
    assert_eq!(shown("SHOW application_name").await, "reporting");
    // Another client on the single pooled connection does not see those settings.
    let plain = proxy.connect(&db.name).await;
    let path = first_value(&plain.simple_query("SHOW search_path").await.unwrap());
    assert_eq!(path, "\"$user\", public");
    assert_eq!(shown("SHOW search_path").await, "app,public");
    let bad = format!("{} options='-c no_such_setting=1'", proxy.url(&db.name));
    let error = refused(&bad).await;
    let message = error
        .as_db_error()
        .expect("server error")
        .message()
        .to_owned();
    assert!(message.contains("no_such_setting"), "{message}");
    drop((client, plain));
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gssenc_is_declined_and_startup_packet_settings_apply() {
    use warpdrive::wire::pg::encode;
    let db = TestDatabase::create("gss").await;
    let proxy = Proxy::start(common::trust_deployment(&db.name, 1)).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    // GSSENCRequest: length 8, code 80877104. libpq sends it first when built with GSSAPI.
    stream
        .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30])
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"N");
    let mut raw = common::RawClient::from_stream(stream);
    raw.send(|b| {
        encode::startup_message(
            b,
            &[
                ("user", "postgres"),
                ("database", &db.name),
                ("client_min_messages", "warning"),
                ("statement_timeout", "4321"),
            ],
        )
    })
    .await;
    assert_eq!(raw.until_ready().await.first().map(|m| m.0), Some(b'R'));
    for (setting, expected) in [
        ("client_min_messages", "warning"),
        ("statement_timeout", "4321ms"),
    ] {
        raw.send(|b| encode::query(b, &format!("SHOW {setting}")))
            .await;
        let replies = raw.until_ready().await;
        let row = replies.iter().find(|(tag, _)| *tag == b'D').expect("a row");
        assert!(
            row.1.ends_with(expected.as_bytes()),
            "{setting}: {replies:?}"
        );
    }
    // A parameter PostgreSQL does not know is refused, naming it.
    let mut refused =
        common::RawClient::from_stream(tokio::net::TcpStream::connect(proxy.addr).await.unwrap());
    refused
        .send(|b| {
            encode::startup_message(
                b,
                &[
                    ("user", "postgres"),
                    ("database", &db.name),
                    ("no_such_setting", "1"),
                ],
            )
        })
        .await;
    let mut reply = Vec::new();
    refused.stream.read_to_end(&mut reply).await.unwrap();
    // As PostgreSQL does: authentication succeeds, then a FATAL error names the setting.
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.contains("FATAL") && text.contains("42704") && text.contains("\"no_such_setting\""),
        "{text}"
    );
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_reset_and_discard_follow_the_client_across_connections() {
    let db = TestDatabase::create("settings").await;
    let proxy = Proxy::for_database(&db, 1).await;
    let a = proxy.connect(&db.name).await;
    let b = proxy.connect(&db.name).await;
    async fn show(client: &tokio_postgres::Client, sql: &str) -> String {
        first_value(&client.simple_query(sql).await.unwrap())
    }
    a.batch_execute("SET TimeZone = 'Asia/Tokyo'")
        .await
        .unwrap();
    b.batch_execute("SET TimeZone = 'America/Lima'")
        .await
        .unwrap();
    assert_eq!(show(&a, "SHOW TimeZone").await, "Asia/Tokyo");
    assert_eq!(show(&b, "SHOW TimeZone").await, "America/Lima");
    // A SET inside a rolled-back transaction does not stick; SET LOCAL never does.
    a.batch_execute("BEGIN; SET TimeZone = 'UTC'; ROLLBACK")
        .await
        .unwrap();
    assert_eq!(show(&a, "SHOW TimeZone").await, "Asia/Tokyo");
    a.batch_execute("BEGIN; SET LOCAL TimeZone = 'UTC'; COMMIT")
        .await
        .unwrap();
    assert_eq!(show(&a, "SHOW TimeZone").await, "Asia/Tokyo");
    a.batch_execute("BEGIN; SET TimeZone = 'Europe/Paris'; COMMIT")
        .await
        .unwrap();
    assert_eq!(show(&b, "SHOW TimeZone").await, "America/Lima");
    assert_eq!(show(&a, "SHOW TimeZone").await, "Europe/Paris");
    a.batch_execute("RESET TimeZone").await.unwrap();
    b.batch_execute("SET search_path TO nowhere").await.unwrap();
    let default_zone = show(&a, "SHOW TimeZone").await;
    assert_ne!(default_zone, "Europe/Paris");
    b.batch_execute("DISCARD ALL").await.unwrap();
    assert_eq!(show(&b, "SHOW search_path").await, "\"$user\", public");
    assert_eq!(show(&b, "SHOW TimeZone").await, default_zone);
    drop((a, b));
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batches_are_answered_in_order_even_when_one_fails() {
    let db = TestDatabase::create("pipeline").await;
    let proxy = Proxy::for_database(&db, 2).await;
    let client = proxy.connect(&db.name).await;
    let ok = client.prepare("SELECT $1::int + 1").await.unwrap();
    let fails = client.prepare("SELECT 1 / $1::int").await.unwrap();
    // tokio-postgres writes these four batches before reading any reply.
    let (a, b, c, d) = tokio::join!(
        client.query_one(&ok, &[&1i32]),
        client.query_one(&fails, &[&0i32]),
        client.query_one(&ok, &[&2i32]),
        client.query_one(&fails, &[&1i32]),
    );
    assert_eq!(a.unwrap().get::<_, i32>(0), 2);
    assert_eq!(
        b.unwrap_err().code(),
        Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO)
    );
    assert_eq!(c.unwrap().get::<_, i32>(0), 3);
    assert_eq!(d.unwrap().get::<_, i32>(0), 1);
    drop(client);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_parse_does_not_keep_its_name_and_deallocate_is_answered() {
    use warpdrive::wire::pg::encode;
    let db = TestDatabase::create("parse").await;
    let proxy = Proxy::start(common::trust_deployment(&db.name, 1)).await;
    let mut raw = common::RawClient::connect(proxy.addr, &db.name).await;
    raw.send(|b| {
        encode::parse(b, b"s1", b"SELECT * FROM missing", &[]);
        encode::sync(b);
    })
    .await;
    assert_eq!(raw.tags().await, "EZ");
    raw.send(|b| {
        encode::parse(b, b"s1", b"SELECT 42", &[]);
        encode::bind(b, b"", b"s1", &[], &[], &[]);
        encode::execute(b, b"", 0);
        encode::sync(b);
    })
    .await;
    assert_eq!(raw.tags().await, "12DCZ");
    // A second Parse of the same name is refused, as PostgreSQL does.
    raw.send(|b| {
        encode::parse(b, b"s1", b"SELECT 43", &[]);
        encode::sync(b);
    })
    .await;
    let replies = raw.until_ready().await;
    assert_eq!(replies[0].0, b'E');
    assert!(String::from_utf8_lossy(&replies[0].1).contains("42P05"));
    // SQL DEALLOCATE of a protocol-level statement is answered for this client alone.
    raw.send(|b| encode::query(b, "DEALLOCATE s1")).await;
    assert_eq!(raw.tags().await, "CZ");
    raw.send(|b| {
        encode::bind(b, b"", b"s1", &[], &[], &[]);
        encode::sync(b);
    })
    .await;
    let replies = raw.until_ready().await;
    assert!(
        String::from_utf8_lossy(&replies[0].1).contains("26000"),
        "{replies:?}"
    );
    raw.send(|b| encode::query(b, "DEALLOCATE ALL")).await;
    assert_eq!(raw.tags().await, "CZ");
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_statements_survive_a_change_of_connection() {
    use warpdrive::wire::pg::encode;
    let db = TestDatabase::create("unnamed").await;
    let proxy = Proxy::start(common::trust_deployment(&db.name, 2)).await;
    let mut a = common::RawClient::connect(proxy.addr, &db.name).await;
    let mut b = common::RawClient::connect(proxy.addr, &db.name).await;
    // Describe first, execute later (pgx style), with another client in between.
    a.send(|m| {
        encode::parse(m, b"", b"SELECT 'a'::text", &[]);
        encode::describe(m, warpdrive::wire::pg::frontend::Target::Statement, b"");
        encode::sync(m);
    })
    .await;
    assert_eq!(a.tags().await, "1tTZ");
    b.send(|m| {
        encode::parse(m, b"", b"SELECT 'b'::text, 2", &[]);
        encode::sync(m);
    })
    .await;
    assert_eq!(b.tags().await, "1Z");
    a.send(|m| {
        encode::bind(m, b"", b"", &[], &[], &[]);
        encode::execute(m, b"", 0);
        encode::sync(m);
    })
    .await;
    let replies = a.until_ready().await;
    let row = replies.iter().find(|(tag, _)| *tag == b'D').expect("a row");
    assert!(row.1.ends_with(b"a"), "{replies:?}");
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_made_stale_by_ddl_are_prepared_again() {
    let db = TestDatabase::create("stale").await;
    let proxy = Proxy::for_database(&db, 1).await;
    let client = proxy.connect(&db.name).await;
    client
        .batch_execute("CREATE TABLE t (a int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let statement = client.prepare("SELECT * FROM t").await.unwrap();
    client.query(&statement, &[]).await.unwrap();
    db.direct()
        .await
        .batch_execute("ALTER TABLE t ADD COLUMN b int")
        .await
        .unwrap();
    // A fresh Parse of the same text works at once, as it does without warpdrive, though
    // the origin connection still held the statement prepared before the ALTER.
    let rows = client.query("SELECT * FROM t", &[]).await.unwrap();
    assert_eq!(rows[0].len(), 2);
    let other = proxy.connect(&db.name).await;
    let rows = other.query("SELECT * FROM t", &[]).await.unwrap();
    assert_eq!(rows[0].len(), 2);
    // The statement this client prepared before the ALTER describes one column: its use
    // fails (PostgreSQL refuses the old plan; tokio-postgres refuses rows of a new shape),
    // and it poisons nobody else.
    assert!(client.query(&statement, &[]).await.is_err());
    let rows = other.query("SELECT * FROM t", &[]).await.unwrap();
    assert_eq!(rows[0].len(), 2);
    drop((client, other));
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_pins_the_client_and_notifications_arrive() {
    let db = TestDatabase::create("listen").await;
    let proxy = Proxy::for_database(&db, 2).await;
    let (listener, mut connection) = tokio_postgres::connect(&proxy.url(&db.name), NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        use futures_util::StreamExt;
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(note) = message {
                let _ = tx.send(note.payload().to_owned());
            }
        }
    });
    listener.batch_execute("LISTEN jobs").await.unwrap();
    let notifier = proxy.connect(&db.name).await;
    notifier
        .batch_execute("NOTIFY jobs, 'first'")
        .await
        .unwrap();
    let payload = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("notification arrives");
    assert_eq!(payload.as_deref(), Some("first"));
    // The listener keeps its connection; the notifier still gets the other one.
    notifier
        .batch_execute("NOTIFY jobs, 'second'")
        .await
        .unwrap();
    let payload = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("notification arrives");
    assert_eq!(payload.as_deref(), Some("second"));
    drop((listener, notifier));
    proxy.stop().await;
    db.drop_now().await;
}

async fn read_error(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_ends_only_that_client() {
    let db = TestDatabase::create("malformed").await;
    let mut deployment = common::deployment(&db.name, common::small_pool(1));
    deployment.client_auth = ClientAuth::Trust;
    deployment.max_message_bytes = 4096;
    let proxy = Proxy::start(deployment).await;
    let bystander = proxy.connect(&db.name).await;

    // Garbage before startup.
    let mut garbage = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // As PostgreSQL: an invalid length is logged and the connection closed, silently.
    let mut reply = Vec::new();
    garbage.read_to_end(&mut reply).await.unwrap();
    assert!(reply.is_empty(), "{reply:?}");
    assert_eq!(proxy.snapshot().invalid_startup_packets, 1);

    // After startup: a bad length, an unknown type, an oversized message.
    let startup = {
        let mut buf = bytes::BytesMut::new();
        warpdrive::wire::pg::encode::startup_message(
            &mut buf,
            &[("user", "postgres"), ("database", &db.name)],
        );
        buf
    };
    for bad in [
        &b"Q\x00\x00\x00\x02"[..],
        b"?\x00\x00\x00\x04",
        b"Q\x00\x01\x00\x00",
    ] {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(&startup).await.unwrap();
        let mut greeting = vec![0u8; 1];
        stream.read_exact(&mut greeting).await.unwrap();
        assert_eq!(greeting[0], b'R');
        // Wait for ReadyForQuery before misbehaving.
        let mut seen = Vec::new();
        while !seen.windows(6).any(|w| w == b"Z\x00\x00\x00\x05I") {
            let mut chunk = [0u8; 512];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            seen.extend_from_slice(&chunk[..n]);
        }
        stream.write_all(bad).await.unwrap();
        let reply = read_error(&mut stream).await;
        assert_eq!(reply.first(), Some(&b'E'), "{bad:?}: {reply:?}");
        assert!(String::from_utf8_lossy(&reply).contains("08P01"), "{bad:?}");
    }
    assert_eq!(
        bystander
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    drop(bystander);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeting_reports_the_origins_parameters() {
    let db = TestDatabase::create("greeting").await;
    let proxy = Proxy::start(common::trust_deployment(&db.name, 1)).await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut raw = common::RawClient::from_stream(stream);
    raw.send(|b| {
        warpdrive::wire::pg::encode::startup_message(
            b,
            &[("user", "postgres"), ("database", &db.name)],
        )
    })
    .await;
    let greeting = raw.until_ready().await;
    let parameter = |name: &str| {
        greeting.iter().find_map(|(tag, body)| {
            let mut parts = body.split(|b| *b == 0);
            (*tag == b'S' && parts.next() == Some(name.as_bytes()))
                .then(|| String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned())
        })
    };
    assert_eq!(parameter("client_encoding").as_deref(), Some("UTF8"));
    let direct = db.direct().await;
    let version: String = direct
        .query_one("SHOW server_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(parameter("server_version"), Some(version));
    assert!(parameter("integer_datetimes").is_some());
    assert!(
        greeting.iter().any(|(tag, _)| *tag == b'K'),
        "BackendKeyData"
    );
    drop(direct);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_passes_through() {
    let db = TestDatabase::create("fastpath").await;
    let proxy = Proxy::start(common::trust_deployment(&db.name, 1)).await;
    let mut raw = common::RawClient::connect(proxy.addr, &db.name).await;
    // FunctionCall int4pl (OID 177) with text arguments 2 and 3, text result.
    raw.send(|b| {
        warpdrive::wire::pg::encode::message(b, b'F', |body| {
            body.extend_from_slice(&177u32.to_be_bytes());
            body.extend_from_slice(&1i16.to_be_bytes());
            body.extend_from_slice(&0i16.to_be_bytes());
            body.extend_from_slice(&2i16.to_be_bytes());
            for arg in [b"2", b"3"] {
                body.extend_from_slice(&1i32.to_be_bytes());
                body.extend_from_slice(arg);
            }
            body.extend_from_slice(&0i16.to_be_bytes());
        })
    })
    .await;
    let replies = raw.until_ready().await;
    assert_eq!(
        replies
            .iter()
            .map(|(t, _)| char::from(*t))
            .collect::<String>(),
        "VZ"
    );
    assert!(replies[0].1.ends_with(b"5"), "{replies:?}");
    proxy.stop().await;
    db.drop_now().await;
}

/// warpdrive authenticates to origins that ask for SCRAM-SHA-256 or md5 (here another
/// warpdrive, since the local PostgreSQL trusts every local connection), and reports
/// refused credentials precisely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_authentication_with_scram_and_md5() {
    let db = TestDatabase::create("origin_auth").await;
    for auth in [ClientAuth::ScramSha256, ClientAuth::Md5] {
        let mut inner = common::deployment(&db.name, common::small_pool(1));
        inner.client_auth = auth;
        let inner = Proxy::start(inner).await;
        let origin = |password: &str| {
            warpdrive::config::OriginUrl::parse(&format!(
                "postgres://postgres:{password}@127.0.0.1:{}/{}?sslmode=disable",
                inner.addr.port(),
                db.name
            ))
            .unwrap()
        };
        let mut outer = common::deployment(&db.name, common::small_pool(1));
        outer.origin = origin(PASSWORD);
        let outer = Proxy::start(outer).await;
        let client = outer.connect(&db.name).await;
        let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1, "{auth:?}");
        drop(client);
        outer.stop().await;

        let mut wrong = common::deployment(&db.name, common::small_pool(1));
        wrong.origin = origin("not-the-password");
        let wrong = Proxy::start(wrong).await;
        let error = match wrong.connect_checked(&db.name).await {
            Ok(_) => panic!("{auth:?}: connected with a wrong origin password"),
            Err(error) => error,
        };
        let message = error
            .as_db_error()
            .map(|e| e.message().to_owned())
            .unwrap_or_default();
        assert!(
            message.contains("refused the credentials"),
            "{auth:?}: {message}"
        );
        wrong.stop().await;
        inner.stop().await;
    }
    db.drop_now().await;
}

/// A batch larger than warpdrive's buffer bound (4 MiB) before its Sync is forwarded as
/// it comes, and answered completely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_larger_than_the_buffer_bound_are_forwarded() {
    use warpdrive::wire::pg::encode;
    let db = TestDatabase::create("bigbatch").await;
    let proxy = Proxy::start(common::trust_deployment(&db.name, 1)).await;
    let mut raw = common::RawClient::connect(proxy.addr, &db.name).await;
    let big = vec![b'x'; 1 << 20];
    raw.send(|m| {
        encode::parse(m, b"", b"SELECT length($1::text)", &[]);
        for _ in 0..6 {
            encode::bind(m, b"", b"", &[], &[Some(&big)], &[]);
            encode::execute(m, b"", 0);
        }
        encode::sync(m);
    })
    .await;
    let replies = raw.until_ready().await;
    let rows: Vec<_> = replies.iter().filter(|(tag, _)| *tag == b'D').collect();
    assert_eq!(
        rows.len(),
        6,
        "{:?}",
        replies
            .iter()
            .map(|(t, _)| char::from(*t))
            .collect::<String>()
    );
    assert!(rows.iter().all(|(_, body)| body.ends_with(b"1048576")));
    proxy.stop().await;
    db.drop_now().await;
}
