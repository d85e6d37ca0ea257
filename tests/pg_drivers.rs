//! What real drivers would notice if warpdrive differed from PostgreSQL: counts read as
//! PostgreSQL reads them, settings and ParameterStatus as the session really has them,
//! startup answered as a 3.0 server answers, temporary objects pinned however they are
//! named, the origin's own errors passed on.

mod common;

use common::{Proxy, RawClient, TestDatabase, last_value};
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
    let row = client.query_one(&sql, &parameters).await.expect("40 000 parameters");
    assert_eq!(row.get::<_, i64>(0), 40_000);
    assert_eq!(row.get::<_, i64>(1), (0..40_000i64).sum::<i64>());
    drop(client);
    proxy.stop().await;
    db.drop_now().await;
}
