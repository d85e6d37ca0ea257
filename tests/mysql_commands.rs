//! Commands drivers rarely send, packet by packet: cursors with COM_STMT_FETCH,
//! COM_STMT_RESET, COM_SET_OPTION, LOAD DATA LOCAL refused for a client that did not
//! allow it, COM_RESET_CONNECTION; and max_query_duration enforced with KILL QUERY.

mod common;

use std::time::{Duration, Instant};

use common::mysql::{MysqlDatabase, RawMysql, mysql_deployment};
use common::{Proxy, small_pool};
use mysql_async::prelude::Queryable;
use warpdrive::config::PoolSettings;
use warpdrive::wire::mysql::binary::{Value, decode_row, encode_execute};
use warpdrive::wire::mysql::caps;
use warpdrive::wire::mysql::column::ColumnDefinition;
use warpdrive::wire::mysql::reply::{EofPacket, ErrPacket, PrepareOk};
use warpdrive::wire::mysql::response::Expect;

fn error_code(packet: &warpdrive::wire::mysql::Packet) -> Option<u16> {
    ErrPacket::decode(packet.payload.clone())
        .ok()
        .map(|error| error.code)
}

#[tokio::test]
async fn a_cursor_keeps_its_connection_until_its_last_row() {
    let db = MysqlDatabase::create("cursor").await;
    let proxy = Proxy::start(mysql_deployment(&db.name, small_pool(2))).await;
    let mut raw = RawMysql::login(proxy.addr, Some(&db.name), 0).await;
    let prepared = raw
        .reply(
            b"\x16SELECT 1 AS n UNION ALL SELECT 2 UNION ALL SELECT 3",
            Expect::Prepare,
        )
        .await;
    let statement = PrepareOk::decode(prepared[0].payload.clone()).expect("prepared");
    let id = statement.statement_id.to_le_bytes();
    // COM_STMT_EXECUTE with CURSOR_TYPE_READ_ONLY: the columns, then an EOF saying a
    // cursor exists, no rows.
    let execute = [0x17, id[0], id[1], id[2], id[3], 0x01, 1, 0, 0, 0];
    let opened = raw.reply(&execute, Expect::Results).await;
    let end = EofPacket::decode(opened.last().expect("packets").payload.clone()).expect("EOF");
    assert_ne!(
        end.status & warpdrive::wire::mysql::status::CURSOR_EXISTS,
        0,
        "{opened:?}"
    );
    // Other clients meanwhile take the other connection: the cursor's stays put.
    let mut other = proxy.mysql(&db.name).await;
    let _: Option<i32> = other.query_first("SELECT 1").await.expect("other");
    // The column, from the prepare's reply: the rows are binary, in its type's layout.
    let column = ColumnDefinition::decode(prepared[1].payload.clone()).expect("column definition");
    let columns = [(column.column_type, column.flags)];
    let mut rows = Vec::new();
    for _ in 0..3 {
        let fetch = [0x1C, id[0], id[1], id[2], id[3], 1, 0, 0, 0];
        let fetched = raw.reply(&fetch, Expect::Rows).await;
        assert_eq!(fetched.len(), 2, "one row and its EOF: {fetched:?}");
        rows.push(decode_row(fetched[0].payload.clone(), &columns).expect("binary row"));
    }
    let values: Vec<Value> = rows.into_iter().flatten().collect();
    assert_eq!(values, vec![Value::Int(1), Value::Int(2), Value::Int(3)]);
    let reset = raw
        .reply(&[0x1A, id[0], id[1], id[2], id[3]], Expect::Ok)
        .await;
    assert_eq!(reset[0].first(), Some(0x00), "COM_STMT_RESET answers OK");
    let unknown = raw.command(&[0x1C, 99, 0, 0, 0, 1, 0, 0, 0]).await;
    assert_eq!(
        error_code(&unknown),
        Some(1243),
        "fetch of an unknown statement"
    );
    drop(other);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn set_option_turns_multi_statements_off_for_this_client() {
    let db = MysqlDatabase::create("set_option").await;
    let proxy = Proxy::start(mysql_deployment(&db.name, small_pool(1))).await;
    let mut raw = RawMysql::login(
        proxy.addr,
        Some(&db.name),
        caps::MULTI_STATEMENTS | caps::MULTI_RESULTS,
    )
    .await;
    let both = raw.reply(b"\x03SELECT 1; SELECT 2", Expect::Results).await;
    assert_eq!(
        both.iter()
            .filter(|p| p.payload[..] == b"\x011"[..] || p.payload[..] == b"\x012"[..])
            .count(),
        2
    );
    let off = raw.command(&[0x1B, 1, 0]).await;
    assert_eq!(
        off.first(),
        Some(0xFE),
        "EOF, as a server answers COM_SET_OPTION"
    );
    let refused = raw.reply(b"\x03SELECT 1; SELECT 2", Expect::Results).await;
    assert_eq!(
        error_code(&refused[0]),
        Some(1064),
        "a syntax error, as without multi-statements"
    );
    // Another client on the same connection still has them.
    let mut other = proxy.mysql(&db.name).await;
    let mut result = other.query_iter("SELECT 1; SELECT 2").await.expect("multi");
    let first: Vec<i32> = result.collect().await.expect("first");
    let second: Vec<i32> = result.collect().await.expect("second");
    assert_eq!((first, second), (vec![1], vec![2]));
    drop(result);
    drop(other);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn load_data_local_is_refused_for_a_client_that_did_not_allow_it() {
    let db = MysqlDatabase::create("infile").await;
    let proxy = Proxy::start(mysql_deployment(&db.name, small_pool(1))).await;
    let mut raw = RawMysql::login(proxy.addr, Some(&db.name), 0).await;
    let created = raw
        .reply(b"\x03CREATE TABLE t (x INT)", Expect::Results)
        .await;
    assert_eq!(created[0].first(), Some(0x00));
    let load = raw
        .reply(
            b"\x03LOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE t",
            Expect::Results,
        )
        .await;
    let refusal = ErrPacket::decode(load[0].payload.clone()).expect("an ERR");
    let message = String::from_utf8_lossy(&refusal.message).into_owned();
    assert!(
        message.contains("LOCAL INFILE") || message.contains("not allowed"),
        "{message}"
    );
    let count = raw
        .reply(b"\x03SELECT COUNT(*) FROM t", Expect::Results)
        .await;
    assert_eq!(
        &count[count.len() - 2].payload[..],
        b"\x010",
        "nothing loaded, the session goes on"
    );
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn reset_connection_forgets_the_clients_state() {
    let db = MysqlDatabase::create("reset").await;
    let proxy = Proxy::start(mysql_deployment(&db.name, small_pool(2))).await;
    let mut conn = proxy.mysql(&db.name).await;
    conn.query_drop("SET SESSION time_zone = '+07:00'")
        .await
        .expect("set");
    conn.query_drop("SET @x = 1").await.expect("pins");
    conn.reset().await.expect("COM_RESET_CONNECTION");
    let zone: Option<String> = conn
        .query_first("SELECT @@session.time_zone")
        .await
        .expect("zone");
    let fresh: Option<String> = db
        .direct()
        .await
        .query_first("SELECT @@session.time_zone")
        .await
        .expect("fresh");
    assert_eq!(zone, fresh);
    let x: Option<Option<i64>> = conn.query_first("SELECT @x").await.expect("x");
    assert_eq!(x, Some(None), "user variables went with the reset");
    drop(conn);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn max_query_duration_stops_a_long_statement() {
    let db = MysqlDatabase::create("duration").await;
    let pool = PoolSettings {
        max_query_duration: Duration::from_millis(500),
        ..small_pool(1)
    };
    let proxy = Proxy::start(mysql_deployment(&db.name, pool)).await;
    let mut conn = proxy.mysql(&db.name).await;
    let started = Instant::now();
    let answer: Result<Option<i64>, _> = conn.query_first("SELECT SLEEP(5)").await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped after {:?}",
        started.elapsed()
    );
    // SLEEP interrupted returns 1, or the statement fails as interrupted.
    match answer {
        Ok(value) => assert_eq!(value, Some(1)),
        Err(error) => assert!(error.to_string().contains("interrupted"), "{error}"),
    }
    let next: Option<i32> = conn
        .query_first("SELECT 3")
        .await
        .expect("the session goes on");
    assert_eq!(next, Some(3));
    drop(conn);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn change_user_logs_in_again_and_starts_over() {
    let db = MysqlDatabase::create("change_user").await;
    let other = MysqlDatabase::create("change_user_b").await;
    let mut deployment = mysql_deployment(&db.name, small_pool(2));
    deployment.users.push(warpdrive::config::ClientUser {
        name: "reader".to_owned(),
        password: "reader-pw".to_owned(),
    });
    let proxy = Proxy::start(deployment).await;
    let mut conn = proxy.mysql(&db.name).await;
    conn.query_drop("SET SESSION time_zone = '+09:00'")
        .await
        .expect("set");
    let change = mysql_async::ChangeUserOpts::default()
        .with_user(Some("reader".to_owned()))
        .with_pass(Some("reader-pw".to_owned()))
        .with_db_name(Some(other.name.clone()));
    conn.change_user(change).await.expect("COM_CHANGE_USER");
    let current: Option<String> = conn.query_first("SELECT DATABASE()").await.expect("db");
    assert_eq!(current.as_deref(), Some(other.name.as_str()));
    let zone: Option<String> = conn
        .query_first("SELECT @@session.time_zone")
        .await
        .expect("zone");
    assert_ne!(
        zone.as_deref(),
        Some("+09:00"),
        "the old session's settings went"
    );
    let wrong = mysql_async::ChangeUserOpts::default()
        .with_user(Some("reader".to_owned()))
        .with_pass(Some("nope".to_owned()));
    assert!(
        conn.change_user(wrong).await.is_err(),
        "a wrong password is refused"
    );
    drop(conn);
    proxy.stop().await;
    other.drop_now().await;
    db.drop_now().await;
}

#[tokio::test]
async fn a_raw_binary_execute_binds_its_parameters() {
    let db = MysqlDatabase::create("binary").await;
    let proxy = Proxy::start(mysql_deployment(&db.name, small_pool(2))).await;
    let mut raw = RawMysql::login(proxy.addr, Some(&db.name), 0).await;
    let prepared = raw
        .reply(
            b"\x16SELECT ? + 1, CONCAT(?, '!'), ? IS NULL",
            Expect::Prepare,
        )
        .await;
    let statement = PrepareOk::decode(prepared[0].payload.clone()).expect("prepared");
    let params = [Value::Int(41), Value::Bytes("hé".into()), Value::Null];
    let reply = raw
        .reply(
            &encode_execute(statement.statement_id, &params),
            Expect::Results,
        )
        .await;
    let columns: Vec<(u8, u16)> = reply[1..4]
        .iter()
        .map(|p| ColumnDefinition::decode(p.payload.clone()).expect("column"))
        .map(|c| (c.column_type, c.flags))
        .collect();
    let row = decode_row(reply[5].payload.clone(), &columns).expect("row");
    assert_eq!(row[0], Value::Int(42));
    assert_eq!(row[1], Value::Bytes("hé!".into()));
    assert_eq!(row[2], Value::Int(1));
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn load_data_local_passes_through_for_a_client_that_allows_it() {
    let db = MysqlDatabase::create("infile_ok").await;
    let proxy = Proxy::start(mysql_deployment(&db.name, small_pool(1))).await;
    let path = std::env::temp_dir().join(format!("{}.tsv", db.name));
    let lines: String = (1..=2000).map(|i| format!("{i}\n")).collect();
    std::fs::write(&path, lines).expect("file");
    let handler = mysql_async::WhiteListFsHandler::new([path.clone()]);
    let opts = proxy
        .mysql_opts(Some(&db.name))
        .local_infile_handler(Some(handler));
    let mut conn = mysql_async::Conn::new(opts).await.expect("connect");
    conn.query_drop("CREATE TABLE t (x INT)")
        .await
        .expect("table");
    conn.query_drop(format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE t",
        path.display()
    ))
    .await
    .expect("load");
    assert_eq!(conn.affected_rows(), 2000);
    let (count, sum): (i64, i64) = conn
        .query_first("SELECT COUNT(*), SUM(x) FROM t")
        .await
        .expect("read")
        .expect("row");
    assert_eq!((count, sum), (2000, 2001000));
    let _ = std::fs::remove_file(&path);
    drop(conn);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn field_list_statistics_and_process_kill_answer_as_a_server_does() {
    let db = MysqlDatabase::create("field_list").await;
    let proxy = Proxy::start(mysql_deployment(&db.name, small_pool(2))).await;
    let mut raw = RawMysql::login(proxy.addr, Some(&db.name), 0).await;
    let created = raw
        .reply(b"\x03CREATE TABLE t (a INT, b TEXT)", Expect::Results)
        .await;
    assert_eq!(created[0].first(), Some(0x00));
    // COM_FIELD_LIST: a definition per column, then EOF.
    let fields = raw.reply(b"\x04t\x00", Expect::Rows).await;
    let names: Vec<Vec<u8>> = fields[..fields.len() - 1]
        .iter()
        .map(|p| {
            ColumnDefinition::decode(p.payload.clone())
                .expect("column")
                .name
                .to_vec()
        })
        .collect();
    assert_eq!(names, vec![b"a".to_vec(), b"b".to_vec()]);
    assert!(EofPacket::decode(fields[fields.len() - 1].payload.clone()).is_ok());
    // COM_STATISTICS: one string.
    let statistics = raw.reply(&[0x09], Expect::Text).await;
    assert!(String::from_utf8_lossy(&statistics[0].payload).contains("Uptime"));
    // COM_PROCESS_KILL of another client's connection id ends that client.
    let mut victim = proxy.mysql(&db.name).await;
    let mut kill = vec![0x0C];
    kill.extend_from_slice(&victim.id().to_le_bytes());
    assert_eq!(raw.command(&kill).await.first(), Some(0x00));
    assert!(
        victim.query_drop("SELECT 1").await.is_err(),
        "the killed client is gone"
    );
    proxy.stop().await;
    db.drop_now().await;
}
