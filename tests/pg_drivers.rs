//! What real drivers would notice if warpdrive differed from PostgreSQL: counts read as
//! PostgreSQL reads them, settings and ParameterStatus as the session really has them,
//! startup answered as a 3.0 server answers, temporary objects pinned however they are
//! named, the origin's own errors passed on.

mod common;

use common::{Proxy, TestDatabase, last_value};
use warpdrive::wire::pg::encode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_with_more_than_32767_parameters_run() {
    let db = TestDatabase::create("drv_params").await;
    let proxy = Proxy::for_database(&db, 1).await;
    let client = proxy.connect(&db.name).await;
    let values: Vec<i32> = (0..40_000).collect();
    let placeholders: Vec<String> = (1..=values.len()).map(|i| format!("(${i}::int)")).collect();
    let sql = format!(
        "SELECT count(*), sum(v)::bigint FROM (VALUES {}) AS t(v)",
        placeholders.join(", ")
    );
    let parameters: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
        .iter()
        .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let row = client
        .query_one(&sql, &parameters)
        .await
        .expect("40 000 parameters");
    assert_eq!(row.get::<_, i64>(0), 40_000);
    assert_eq!(row.get::<_, i64>(1), (0..40_000i64).sum::<i64>());
    drop(client);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_application_name_has_none() {
    let db = TestDatabase::create("drv_appname").await;
    let proxy = Proxy::for_database(&db, 1).await;
    let named = tokio_postgres::connect(
        &format!("{} application_name=reports", proxy.url(&db.name)),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect");
    tokio::spawn(named.1);
    let anonymous = proxy.connect(&db.name).await;
    for _ in 0..2 {
        assert_eq!(
            last_value(&named.0, "SHOW application_name")
                .await
                .as_deref(),
            Some("reports")
        );
        assert_eq!(
            last_value(&anonymous, "SHOW application_name")
                .await
                .as_deref(),
            Some("")
        );
    }
    drop((named.0, anonymous));
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminate_before_startup_closes_without_a_word() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = TestDatabase::create("drv_terminate").await;
    let proxy = Proxy::for_database(&db, 1).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(b"X\x00\x00\x00\x04").await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    assert!(reply.is_empty(), "{reply:?}");
    assert_eq!(proxy.snapshot().invalid_startup_packets, 1);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_objects_named_through_pg_temp_pin_their_client() {
    let db = TestDatabase::create("drv_pg_temp").await;
    let proxy = Proxy::for_database(&db, 2).await;
    let forms = [
        (
            "CREATE TABLE pg_temp.foo (a int)",
            "SELECT count(*) FROM foo",
        ),
        (
            "CREATE TYPE pg_temp.mood AS ENUM ('ok')",
            "SELECT 'ok'::pg_temp.mood",
        ),
        (
            "CREATE DOMAIN pg_temp.d AS int CHECK (VALUE > 0)",
            "SELECT 1::pg_temp.d",
        ),
        (
            "SET search_path = pg_temp, public; CREATE TABLE foo (a int)",
            "SELECT count(*) FROM foo",
        ),
    ];
    for (create, using) in forms {
        let owner = proxy.connect(&db.name).await;
        owner.batch_execute(create).await.expect(create);
        // The object is on the owner's connection, which it keeps.
        let other = proxy.connect(&db.name).await;
        other
            .batch_execute(
                "CREATE TEMPORARY TABLE foo (a int); CREATE TYPE pg_temp.mood AS ENUM ('x')",
            )
            .await
            .unwrap_or_else(|e| panic!("after {create}: {e}"));
        owner
            .batch_execute(using)
            .await
            .unwrap_or_else(|e| panic!("{using}: {e}"));
        drop((owner, other));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    proxy.stop().await;
    db.drop_now().await;
}

/// The first message a server answers a startup for protocol 3.2 with a `_pq_.` option.
async fn negotiation_reply(address: std::net::SocketAddr, database: &str) -> Vec<u8> {
    use bytes::BufMut;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut body = bytes::BytesMut::new();
    body.put_i32((3 << 16) | 2);
    for (name, value) in [
        ("user", common::ORIGIN_USER),
        ("database", database),
        ("_pq_.test_option", "on"),
    ] {
        body.put_slice(name.as_bytes());
        body.put_u8(0);
        body.put_slice(value.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut packet = bytes::BytesMut::new();
    packet.put_i32(body.len() as i32 + 4);
    packet.put_slice(&body);
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream.write_all(&packet).await.expect("send startup");
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).await.expect("a reply");
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let mut rest = vec![0u8; len - 4];
    stream.read_exact(&mut rest).await.expect("the whole reply");
    [header.to_vec(), rest].concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_negotiation_is_answered_as_postgresql_15_answers() {
    let db = TestDatabase::create("drv_negotiate").await;
    let proxy = Proxy::start(common::trust_deployment(&db.name, 1)).await;
    let origin: std::net::SocketAddr = "127.0.0.1:5432".parse().expect("address");
    let direct = negotiation_reply(origin, &db.name).await;
    let through = negotiation_reply(proxy.addr, &db.name).await;
    assert_eq!(direct[0], b'v', "{direct:?}");
    assert_eq!(through, direct);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_passwords_are_normalised_with_saslprep() {
    let db = TestDatabase::create("drv_saslprep").await;
    let mut deployment = common::deployment(&db.name, common::small_pool(1));
    common::client_password(&mut deployment, "IX-\u{2168}");
    let proxy = Proxy::start(deployment).await;
    for password in ["IX-\u{2168}", "IX-IX"] {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(proxy.addr.port())
            .user(common::ORIGIN_USER)
            .password(password)
            .dbname(&db.name);
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("password {password:?}: {e}"));
        tokio::spawn(connection);
        assert_eq!(last_value(&client, "SELECT 1").await.as_deref(), Some("1"));
    }
    proxy.stop().await;
    db.drop_now().await;
}

/// The salt of the server-first-message a SCRAM exchange for `user` gets.
async fn scram_salt(address: std::net::SocketAddr, user: &str, database: &str) -> String {
    let mut raw = common::RawClient::from_stream(
        tokio::net::TcpStream::connect(address)
            .await
            .expect("connect"),
    );
    raw.send(|m| {
        warpdrive::wire::pg::encode::startup_message(m, &[("user", user), ("database", database)])
    })
    .await;
    raw.read_message().await;
    raw.send(|m| {
        warpdrive::wire::pg::encode::sasl_initial_response(
            m,
            "SCRAM-SHA-256",
            b"n,,n=,r=abcdefghijklmnopqrstuvwx",
        )
    })
    .await;
    let (tag, body) = raw.read_message().await;
    assert_eq!(tag, b'R');
    let text = String::from_utf8_lossy(&body[4..]).into_owned();
    text.split(',')
        .find_map(|part| part.strip_prefix("s="))
        .expect("a salt")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_cannot_be_told_from_known_ones_by_their_salt() {
    let db = TestDatabase::create("drv_salt").await;
    let proxy = Proxy::for_database(&db, 1).await;
    let unknown = scram_salt(proxy.addr, "nobody_here", &db.name).await;
    assert_eq!(
        scram_salt(proxy.addr, "nobody_here", &db.name).await,
        unknown
    );
    let known = scram_salt(proxy.addr, common::ORIGIN_USER, &db.name).await;
    assert_eq!(
        scram_salt(proxy.addr, common::ORIGIN_USER, &db.name).await,
        known
    );
    assert_ne!(
        scram_salt(proxy.addr, "somebody_else", &db.name).await,
        unknown
    );
    proxy.stop().await;
    db.drop_now().await;
}

/// What a server answers a negotiation request sent twice: the first answer byte, then
/// the SQLSTATE of the error that follows.
async fn repeated_negotiation(address: std::net::SocketAddr, code: u32) -> (u8, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = Vec::new();
    request.extend_from_slice(&8u32.to_be_bytes());
    request.extend_from_slice(&code.to_be_bytes());
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream.write_all(&request).await.expect("send");
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await.expect("an answer");
    stream.write_all(&request).await.expect("send again");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.expect("the error");
    let text = String::from_utf8_lossy(&reply).into_owned();
    let code = text
        .split('\0')
        .find_map(|field| field.strip_prefix('C'))
        .unwrap_or_default()
        .to_owned();
    (answer[0], code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_protocol_differences_are_gone() {
    let db = TestDatabase::create("drv_small").await;
    let proxy = Proxy::start(common::trust_deployment(&db.name, 1)).await;
    // A second GSSENCRequest, or an SSLRequest after SSL was refused, is a FATAL
    // "unsupported frontend protocol", as PostgreSQL's postmaster answers it (the local
    // server offers GSS encryption, so it cannot be compared directly).
    for code in [80_877_104, 80_877_103] {
        assert_eq!(
            repeated_negotiation(proxy.addr, code).await,
            (b'N', "0A000".to_owned())
        );
    }
    // replication=no and its spellings are ordinary connections.
    for value in ["no", "false", "off", "n", "0"] {
        let mut raw = common::RawClient::from_stream(
            tokio::net::TcpStream::connect(proxy.addr)
                .await
                .expect("connect"),
        );
        raw.send(|m| {
            warpdrive::wire::pg::encode::startup_message(
                m,
                &[
                    ("user", common::ORIGIN_USER),
                    ("database", &db.name),
                    ("replication", value),
                ],
            )
        })
        .await;
        let greeting = raw.until_ready().await;
        assert_eq!(
            greeting.first().map(|m| m.0),
            Some(b'R'),
            "{value}: {greeting:?}"
        );
        raw.send(|m| warpdrive::wire::pg::encode::query(m, "SELECT 1"))
            .await;
        assert_eq!(raw.tags().await, "TDCZ", "replication={value}");
    }
    proxy.stop().await;
    // Something else than a password message during SCRAM gets an error, not silence.
    let proxy = Proxy::for_database(&db, 1).await;
    let mut raw = common::RawClient::from_stream(
        tokio::net::TcpStream::connect(proxy.addr)
            .await
            .expect("connect"),
    );
    raw.send(|m| {
        warpdrive::wire::pg::encode::startup_message(
            m,
            &[("user", common::ORIGIN_USER), ("database", &db.name)],
        )
    })
    .await;
    assert_eq!(raw.read_message().await.0, b'R');
    raw.send(|m| warpdrive::wire::pg::encode::query(m, "SELECT 1"))
        .await;
    let (tag, body) = raw.read_message().await;
    assert_eq!(tag, b'E');
    assert!(String::from_utf8_lossy(&body).contains("08P01"), "{body:?}");
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origins_fatal_reaches_the_client_with_its_own_code() {
    let db = TestDatabase::create("drv_fatal").await;
    let proxy = Proxy::start(common::trust_deployment(&db.name, 1)).await;
    let mut raw = common::RawClient::connect(proxy.addr, &db.name).await;
    raw.send(|m| {
        warpdrive::wire::pg::encode::query(
            m,
            "SET idle_in_transaction_session_timeout = '200ms'; BEGIN",
        )
    })
    .await;
    raw.until_ready().await;
    // The origin ends the idle transaction with FATAL 25P03; the client sees exactly that.
    let (tag, body) = raw.read_message().await;
    assert_eq!(tag, b'E');
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("C25P03"), "{text}");
    assert!(text.contains("SFATAL"), "{text}");
    proxy.stop().await;
    db.drop_now().await;
}

/// Connects with these startup parameters; returns the client and the greeting's
/// ParameterStatus values.
async fn connect_with(
    address: std::net::SocketAddr,
    parameters: &[(&str, &str)],
) -> (common::RawClient, Vec<(String, String)>) {
    let mut raw = common::RawClient::from_stream(
        tokio::net::TcpStream::connect(address)
            .await
            .expect("connect"),
    );
    raw.send(|m| warpdrive::wire::pg::encode::startup_message(m, parameters))
        .await;
    let greeting = raw.until_ready().await;
    let statuses = greeting
        .iter()
        .filter(|(tag, _)| *tag == b'S')
        .map(|(_, body)| {
            let mut parts = body.split(|b| *b == 0);
            let name = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let value = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            (name, value)
        })
        .collect();
    (raw, statuses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_is_told_its_own_encoding() {
    let db = TestDatabase::create("drv_encoding").await;
    let proxy = Proxy::start(common::trust_deployment(&db.name, 1)).await;
    for spellings in [["LATIN1", "latin1"], ["EUC_JP", "eucjp"]] {
        for spelling in spellings {
            let (mut raw, statuses) = connect_with(
                proxy.addr,
                &[
                    ("user", common::ORIGIN_USER),
                    ("database", &db.name),
                    ("client_encoding", spelling),
                ],
            )
            .await;
            let announced = statuses
                .iter()
                .find(|(name, _)| name == "client_encoding")
                .map(|(_, value)| value.as_str());
            assert_eq!(announced, Some(spellings[0]), "{spelling}: {statuses:?}");
            if spellings[0] == "LATIN1" {
                // The bytes the client gets are its encoding's: é is one byte in LATIN1.
                raw.send(|m| warpdrive::wire::pg::encode::query(m, "SELECT chr(233)"))
                    .await;
                let replies = raw.until_ready().await;
                let row = replies.iter().find(|(tag, _)| *tag == b'D').expect("a row");
                assert!(row.1.ends_with(&[0, 0, 0, 1, 0xE9]), "{:?}", row.1);
            }
        }
    }
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_at_startup_reach_every_client() {
    let db = TestDatabase::create("drv_notices").await;
    let proxy = Proxy::start(common::trust_deployment(&db.name, 1)).await;
    let long_name = "a".repeat(70);
    for _ in 0..2 {
        let mut raw = common::RawClient::from_stream(
            tokio::net::TcpStream::connect(proxy.addr)
                .await
                .expect("connect"),
        );
        raw.send(|m| {
            warpdrive::wire::pg::encode::startup_message(
                m,
                &[
                    ("user", common::ORIGIN_USER),
                    ("database", &db.name),
                    ("application_name", &long_name),
                ],
            )
        })
        .await;
        let greeting = raw.until_ready().await;
        let notice = greeting.iter().find(|(tag, _)| *tag == b'N');
        assert!(
            notice.is_some_and(|(_, body)| String::from_utf8_lossy(body).contains("truncated")),
            "{greeting:?}"
        );
    }
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warpdrives_own_cancel_never_hits_the_next_clients_query() {
    let db = TestDatabase::create("drv_own_cancel").await;
    let mut pool = common::small_pool(1);
    pool.max_query_duration = std::time::Duration::from_millis(100);
    let proxy = Proxy::start(common::deployment(&db.name, pool)).await;
    let slow = proxy.connect(&db.name).await;
    let other = proxy.connect(&db.name).await;
    // The slow client's queries end right around their deadline, so warpdrive's cancel
    // often arrives after the query it was meant for: it must not reach the other's.
    let slow_task = tokio::spawn(async move {
        for _ in 0..30 {
            let _ = slow.simple_query("SELECT pg_sleep(0.1)").await;
        }
    });
    let mut cancelled = 0;
    for _ in 0..120 {
        if let Err(error) = other.simple_query("SELECT pg_sleep(0.01)").await {
            assert_eq!(
                error.code(),
                Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
                "{error}"
            );
            cancelled += 1;
        }
    }
    slow_task.await.unwrap();
    assert_eq!(cancelled, 0, "another client's cancel reached this one");
    drop(other);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_the_origin_skips_after_an_error_get_no_reply() {
    let db = TestDatabase::create("drv_skip").await;
    let proxy = Proxy::start(common::trust_deployment(&db.name, 1)).await;
    let mut raw = common::RawClient::connect(proxy.addr, &db.name).await;
    raw.send(|m| {
        encode::parse(m, b"s1", b"SELECT 1", &[]);
        encode::sync(m);
    })
    .await;
    assert_eq!(raw.tags().await, "1Z");
    // The first part of a batch fails; the rest arrives after the error, then its Sync.
    raw.send(|m| {
        common::parse_bind_execute(m, b"", b"SELECT 1 / 0");
        encode::flush(m);
    })
    .await;
    let mut tags = String::new();
    while !tags.ends_with('E') {
        tags.push(char::from(raw.read_message().await.0));
    }
    // PostgreSQL folds 1 / 0 when it plans, so the Bind fails.
    assert_eq!(tags, "1E");
    // The origin skips them all, a Close warpdrive answers itself included: PostgreSQL
    // would have skipped it too, and the client keeps its statement.
    raw.send(|m| {
        encode::parse(m, b"", b"SELECT 2", &[]);
        common::bind_execute(m, b"");
        encode::close(m, warpdrive::wire::pg::frontend::Target::Statement, b"s1");
        encode::sync(m);
        encode::query(m, "SELECT 42");
    })
    .await;
    assert_eq!(raw.tags().await, "Z");
    let replies = raw.until_ready().await;
    let shown: String = replies.iter().map(|(tag, _)| char::from(*tag)).collect();
    assert_eq!(shown, "TDCZ");
    assert!(replies[1].1.ends_with(b"42"), "{replies:?}");
    raw.send(|m| {
        common::bind_execute(m, b"s1");
        encode::sync(m);
    })
    .await;
    assert_eq!(raw.tags().await, "2DCZ");
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_without_sync_run_as_they_arrive() {
    let db = TestDatabase::create("drv_nosync").await;
    db.direct()
        .await
        .batch_execute("CREATE TABLE u (id int PRIMARY KEY); INSERT INTO u VALUES (1)")
        .await
        .unwrap();
    let mut deployment = common::trust_deployment(&db.name, 1);
    deployment.cache.enabled = true;
    let proxy = Proxy::start(deployment).await;
    let mut raw = common::RawClient::connect(proxy.addr, &db.name).await;
    // libpq's pipeline without Sync or Flush: the unique violation, and the results
    // before it, arrive while the client waits.
    raw.send(|m| {
        encode::parse(m, b"ins", b"INSERT INTO u VALUES ($1)", &[]);
        for id in [b"2", b"1"] {
            encode::bind(m, b"", b"ins", &[], &[Some(id)], &[]);
            encode::execute(m, b"", 0);
        }
    })
    .await;
    let mut tags = String::new();
    while !tags.ends_with('E') {
        tags.push(char::from(raw.read_message().await.0));
    }
    assert_eq!(tags, "12C2E");
    raw.send(encode::sync).await;
    assert_eq!(raw.tags().await, "Z");
    // asyncpg's executemany: large Bind/Execute pairs, the second failing; the error
    // arrives before the client has sent the rest.
    let large = vec![b'x'; 40 << 10];
    raw.send(|m| {
        encode::parse(m, b"big", b"SELECT length($1)", &[]);
        encode::bind(m, b"", b"big", &[], &[Some(&large)], &[]);
        encode::execute(m, b"", 0);
        encode::bind(m, b"", b"ins", &[], &[Some(b"1")], &[]);
        encode::execute(m, b"", 0);
    })
    .await;
    let mut tags = String::new();
    while !tags.ends_with('E') {
        tags.push(char::from(raw.read_message().await.0));
    }
    assert_eq!(tags, "12DC2E");
    raw.send(encode::sync).await;
    assert_eq!(raw.tags().await, "Z");
    // A batch sent whole with its Sync is still decided, and cached, as one request.
    for _ in 0..2 {
        raw.send(|m| {
            common::parse_bind_execute(m, b"", b"SELECT count(*) FROM u");
            encode::sync(m);
        })
        .await;
        assert_eq!(raw.tags().await, "12DCZ");
    }
    assert_eq!(proxy.count("hit"), 1);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warpdrive_prepares_origin_passwords_with_saslprep_too() {
    let db = TestDatabase::create("drv_saslprep_origin").await;
    // The origin here is another warpdrive, since the local PostgreSQL trusts everyone.
    let mut inner = common::deployment(&db.name, common::small_pool(1));
    common::client_password(&mut inner, "IX-IX");
    let inner = Proxy::start(inner).await;
    let origin = warpdrive::config::OriginUrl::parse(&format!(
        "postgres://{}:IX-%E2%85%A8@127.0.0.1:{}/{}?sslmode=disable",
        common::ORIGIN_USER,
        inner.addr.port(),
        db.name
    ))
    .expect("origin URL");
    let mut outer = common::deployment(&db.name, common::small_pool(1));
    outer.origin = origin;
    let outer = Proxy::start(outer).await;
    let client = outer.connect(&db.name).await;
    assert_eq!(last_value(&client, "SELECT 1").await.as_deref(), Some("1"));
    drop(client);
    outer.stop().await;
    inner.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_large_pipeline_leaves_every_later_reply_in_step() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = TestDatabase::create("drv_cancel_pipe").await;
    let proxy = Proxy::start(common::trust_deployment(&db.name, 1)).await;
    let mut raw = common::RawClient::from_stream(
        tokio::net::TcpStream::connect(proxy.addr)
            .await
            .expect("connect"),
    );
    raw.send(|m| {
        encode::startup_message(m, &[("user", common::ORIGIN_USER), ("database", &db.name)])
    })
    .await;
    let greeting = raw.until_ready().await;
    let key = &greeting
        .iter()
        .find(|(tag, _)| *tag == b'K')
        .expect("BackendKeyData")
        .1;
    let process_id = i32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    let secret = key[4..].to_vec();
    let large = vec![b'x'; 32 << 10];
    for round in 0..4 {
        // asyncpg's executemany: many large Bind/Execute pairs and a Sync, then a cancel.
        raw.send(|m| {
            encode::parse(m, b"", b"SELECT pg_sleep(0.02), length($1)", &[]);
            for _ in 0..128 {
                encode::bind(m, b"", b"", &[], &[Some(&large)], &[]);
                encode::execute(m, b"", 0);
            }
            encode::sync(m);
        })
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(60 + 20 * round)).await;
        let mut cancel = tokio::net::TcpStream::connect(proxy.addr)
            .await
            .expect("connect");
        let mut request = bytes::BytesMut::new();
        encode::cancel_request(&mut request, process_id, &secret);
        cancel.write_all(&request).await.expect("cancel");
        let _ = cancel.read_to_end(&mut Vec::new()).await;
        let replies = raw.until_ready().await;
        let error = replies
            .iter()
            .find(|(tag, _)| *tag == b'E')
            .expect("the cancel's error");
        assert!(String::from_utf8_lossy(&error.1).contains("57014"));
        // What follows is answered exactly.
        raw.send(|m| {
            encode::parse(m, b"", b"SELECT $1::int AS n", &[]);
            encode::describe(m, warpdrive::wire::pg::frontend::Target::Statement, b"");
            encode::flush(m);
        })
        .await;
        let mut tags = String::new();
        while !tags.ends_with('T') {
            tags.push(char::from(raw.read_message().await.0));
        }
        assert_eq!(tags, "1tT", "round {round}");
        raw.send(encode::sync).await;
        assert_eq!(raw.tags().await, "Z", "round {round}");
        raw.send(|m| encode::query(m, "SELECT 42")).await;
        let replies = raw.until_ready().await;
        let shown: String = replies.iter().map(|(tag, _)| char::from(*tag)).collect();
        assert_eq!(shown, "TDCZ", "round {round}");
        assert!(replies[1].1.ends_with(b"42"));
    }
    proxy.stop().await;
    db.drop_now().await;
}
