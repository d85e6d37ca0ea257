//! Unit tests of configuration validation: every error names its key.

use super::*;

const FULL: &str = r#"
    [[deployment]]
    name = "shop"
    listen = "127.0.0.1:6432"
    origin = "postgres://app:s%40cret@db.internal:5433/shop?sslmode=require"
    databases = ["shop", "shop_test"]

    [deployment.client]
    auth = "md5"
    users = [{ name = "web", password = "w" }]

    [deployment.pool]
    min_idle = 2
    max_size = 8
    acquire_timeout = "2s"
    idle_timeout = "5m"
    max_query_duration = 30

    [deployment.limits]
    max_message_bytes = "8MiB"

    [[deployment]]
    name = "reports"
    listen = "127.0.0.1:6433"
    origin = "postgresql://ro:pw@127.0.0.1/reports"
"#;

#[test]
fn a_full_file_validates_into_typed_values() {
    let config = Config::from_toml(FULL, "test.toml").expect("valid");
    let shop = &config.deployments[0];
    assert_eq!(shop.name, "shop");
    assert_eq!(shop.origin.host, "db.internal");
    assert_eq!(shop.origin.port, 5433);
    assert_eq!(shop.origin.password.as_deref(), Some("s@cret"));
    assert_eq!(shop.origin.ssl_mode, SslMode::Require);
    assert_eq!(shop.client_auth, ClientAuth::Md5);
    assert_eq!(shop.users[0].name, "web");
    assert!(shop.allows_database("shop_test"));
    assert!(!shop.allows_database("postgres"));
    assert_eq!(shop.pool.max_size, 8);
    assert_eq!(shop.pool.acquire_timeout, Duration::from_secs(2));
    assert_eq!(shop.pool.max_query_duration, Duration::from_secs(30));
    assert_eq!(shop.pool.connect_timeout, Duration::from_secs(15));
    assert_eq!(shop.max_message_bytes, 8 << 20);
    let reports = &config.deployments[1];
    assert_eq!(reports.origin.port, 5432);
    assert_eq!(reports.users[0].name, "ro");
    assert_eq!(reports.client_auth, ClientAuth::ScramSha256);
    assert!(reports.allows_database("anything"));
}

fn problem(text: &str) -> String {
    Config::from_toml(text, "test.toml")
        .expect_err("invalid")
        .to_string()
}

#[test]
fn errors_name_the_key() {
    let base = "[[deployment]]\nname = \"a\"\nlisten = \"127.0.0.1:6432\"\norigin = \"postgres://u:p@h/d\"\n";
    assert!(problem("").contains("deployment"));
    let typo = problem(&format!("{base}[deployment.pool]\nmax_sise = 3\n"));
    assert!(typo.contains("max_sise"), "{typo}");
    let range = problem(&format!("{base}[deployment.pool]\nmin_idle = 30\n"));
    assert!(range.contains("deployment[0].pool.min_idle"), "{range}");
    let duration = problem(&format!(
        "{base}[deployment.pool]\nacquire_timeout = \"soon\"\n"
    ));
    assert!(
        duration.contains("deployment[0].pool.acquire_timeout"),
        "{duration}"
    );
    let listen = problem(&base.replace("127.0.0.1:6432", "localhost"));
    assert!(listen.contains("deployment[0].listen"), "{listen}");
    let origin = problem(&base.replace("postgres://u:p@h/d", "redis://u@h/d"));
    assert!(origin.contains("deployment[0].origin"), "{origin}");
    let foreign = problem(&format!(
        "{}[deployment.client]\nauth = \"md5\"\n",
        base.replace("postgres://u:p@h/d", "mysql://u:p@h/d")
    ));
    assert!(
        foreign.contains("\"caching_sha2_password\", \"mysql_native_password\", \"trust\""),
        "{foreign}"
    );
    let auth = problem(&format!("{base}[deployment.client]\nauth = \"password\"\n"));
    assert!(auth.contains("deployment[0].client.auth"), "{auth}");
    let nopass = problem(&base.replace("u:p@", "u@"));
    assert!(nopass.contains("no password"), "{nopass}");
    let twice = problem(&format!("{base}{base}"));
    assert!(twice.contains("deployment[1].name"), "{twice}");
}

#[test]
fn the_single_form_is_validated_like_a_file() {
    let listen: SocketAddr = "127.0.0.1:6432".parse().expect("addr");
    let problem = |single: SingleDeployment| match Config::single(&single) {
        Ok(_) => panic!("must be refused"),
        Err(error) => error.to_string(),
    };
    let nopass = problem(SingleDeployment::new(listen, "postgres://app@db/shop"));
    assert!(nopass.contains("no password"), "{nopass}");
    assert!(nopass.contains("--client-auth trust"), "{nopass}");
    let trusted = Config::single(&SingleDeployment {
        client_auth: Some(ClientAuth::Trust),
        ..SingleDeployment::new(listen, "postgres://app@db/shop")
    })
    .expect("trust needs no password");
    assert_eq!(trusted.deployments[0].client_auth, ClientAuth::Trust);
    let long = problem(SingleDeployment {
        max_age: Some(3601),
        ..SingleDeployment::new(listen, "postgres://app:s@db/shop")
    });
    assert!(
        long.contains("--max-age") && long.contains("at most 3600"),
        "{long}"
    );
    let swr = problem(SingleDeployment {
        stale_while_revalidate: Some(7200),
        ..SingleDeployment::new(listen, "postgres://app:s@db/shop")
    });
    assert!(swr.contains("--swr"), "{swr}");
    let tuned = Config::single(&SingleDeployment {
        max_age: Some(3600),
        stale_while_revalidate: Some(0),
        caching_disabled: true,
        ..SingleDeployment::new(listen, "postgres://app:s@db/shop")
    })
    .expect("within bounds");
    let cache = &tuned.deployments[0].cache;
    assert_eq!(cache.max_age, Duration::from_secs(3600));
    assert_eq!(cache.stale_while_revalidate, Duration::ZERO);
    assert!(!cache.enabled);
    let mysql = Config::single(&SingleDeployment::new(listen, "mysql://app:s@db/shop"))
        .expect("a MySQL origin");
    assert_eq!(mysql.deployments[0].client_auth, ClientAuth::CachingSha2);
    let scram = problem(SingleDeployment {
        client_auth: Some(ClientAuth::ScramSha256),
        ..SingleDeployment::new(listen, "mysql://app:s@db/shop")
    });
    assert!(
        scram.contains("--client-auth") && scram.contains("mysql origin"),
        "{scram}"
    );
    assert_eq!(
        OriginUrl::default_listen("mariadb://root@h/db").port(),
        6033
    );
    assert_eq!(OriginUrl::default_listen("postgres://u@h/d").port(), 6432);
}

#[test]
fn passwords_are_not_printed_in_debug_output() {
    let config = Config::from_toml(FULL, "test.toml").expect("valid");
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("s@cret") && !debug.contains("\"w\""),
        "{debug}"
    );
}

#[test]
fn the_upstream_tier_is_configured_and_checked() {
    use crate::cache::tier::Consistency;
    let base = "[[deployment]]\nname = \"a\"\nlisten = \"127.0.0.1:6432\"\norigin = \"postgres://u:p@h/d\"\n[deployment.cache]\n";
    let none = Config::from_toml(base, "test.toml").expect("valid");
    assert_eq!(none.deployments[0].cache.upstream, None);
    let tuned = Config::from_toml(
        &format!("{base}upstream = \"rediss://r:6380/2\"\nupstream_prefix = \"shop\"\nupstream_timeout = \"5ms\"\nconsistency = \"strict\"\nupstream_single_flight = true\n"),
        "test.toml",
    )
    .expect("valid");
    let tier = tuned.deployments[0]
        .cache
        .upstream
        .as_ref()
        .expect("a tier");
    assert_eq!(tier.url, "rediss://r:6380/2");
    assert_eq!(tier.prefix, "shop");
    assert_eq!(tier.timeout, Duration::from_millis(5));
    assert_eq!(tier.consistency, Consistency::Strict);
    assert!(tier.single_flight);
    let defaults = Config::from_toml(&format!("{base}upstream = \"redis://r\"\n"), "test.toml")
        .expect("valid");
    let tier = defaults.deployments[0]
        .cache
        .upstream
        .as_ref()
        .expect("a tier");
    assert_eq!(
        (tier.prefix.as_str(), tier.timeout),
        ("warpdrive", Duration::from_millis(20))
    );
    assert_eq!(tier.consistency, Consistency::Fast);
    let scheme = problem(&format!("{base}upstream = \"memcached://r\"\n"));
    assert!(
        scheme.contains("deployment[0].cache.upstream") && scheme.contains("redis://"),
        "{scheme}"
    );
    let stray = problem(&format!("{base}consistency = \"strict\"\n"));
    assert!(
        stray.contains("deployment[0].cache.consistency") && stray.contains("upstream ="),
        "{stray}"
    );
    let word = problem(&format!(
        "{base}upstream = \"redis://r\"\nconsistency = \"eventual\"\n"
    ));
    assert!(word.contains("\"fast\" or \"strict\""), "{word}");
    let tag = problem(&format!(
        "{base}upstream = \"redis://r\"\nupstream_prefix = \"a{{b}}\"\n"
    ));
    assert!(tag.contains("upstream_prefix"), "{tag}");
    let plain_ca = problem(&format!(
        "{base}upstream = \"redis://r\"\nupstream_ca = \"ca.pem\"\n"
    ));
    assert!(
        plain_ca.contains("upstream_ca") && plain_ca.contains("rediss://"),
        "{plain_ca}"
    );
    let with_ca = Config::from_toml(
        &format!("{base}upstream = \"rediss://r\"\nupstream_ca = \"ca.pem\"\n"),
        "test.toml",
    )
    .expect("valid");
    let tier = with_ca.deployments[0]
        .cache
        .upstream
        .as_ref()
        .expect("a tier");
    assert_eq!(
        tier.ca_file.as_deref(),
        Some(std::path::Path::new("ca.pem"))
    );
    let listen: SocketAddr = "127.0.0.1:6432".parse().expect("addr");
    let single = Config::single(&SingleDeployment {
        cache_upstream: Some("redis://127.0.0.1:6379/0".to_owned()),
        ..SingleDeployment::new(listen, "postgres://app:s@db/shop")
    })
    .expect("valid");
    assert!(single.deployments[0].cache.upstream.is_some());
    let bad = Config::single(&SingleDeployment {
        cache_upstream: Some("127.0.0.1:6379".to_owned()),
        ..SingleDeployment::new(listen, "postgres://app:s@db/shop")
    });
    assert!(bad.is_err_and(|e| e.to_string().contains("--cache-upstream")));
}
