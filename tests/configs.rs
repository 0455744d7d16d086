//! The example configurations in `configs/` stay valid, and the reference stays in sync with
//! the defaults.

use std::path::{Path, PathBuf};

use pgring::config::{Config, PoolMode};

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs")
}

fn toml_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(configs_dir())
        .expect("configs/ exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files
}

fn load(name: &str) -> Config {
    let path = configs_dir().join(name);
    Config::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_example_parses() {
    let files = toml_files();
    for expected in [
        "reference.toml",
        "quickstart.toml",
        "2-cores.toml",
        "8-cores.toml",
        "64-cores.toml",
    ] {
        assert!(
            files.iter().any(|f| f.ends_with(expected)),
            "configs/{expected} is missing"
        );
    }
    for file in &files {
        let config = Config::load(file).unwrap_or_else(|e| panic!("{e}"));
        // What --check prints must itself be a valid config describing the same thing.
        let rendered = config.to_toml();
        let again = Config::parse(&rendered, file)
            .unwrap_or_else(|e| panic!("{}: rendered config: {e}\n{rendered}", file.display()));
        assert_eq!(again, config, "{}", file.display());
    }
}

#[test]
fn reference_pooler_section_is_the_defaults() {
    let reference = load("reference.toml");
    let empty = Config::parse("", &configs_dir().join("empty.toml")).expect("empty file is valid");
    assert_eq!(reference.pooler, empty.pooler);
    // And it shows every kind of entry.
    assert!(!reference.databases.is_empty());
    assert!(reference.fallback_database.is_some());
    assert!(!reference.users.is_empty());
}

#[test]
fn reference_lists_every_pooler_key() {
    // Every key the effective configuration has is written (and so documented) in the
    // reference.
    let text = std::fs::read_to_string(configs_dir().join("reference.toml")).unwrap();
    let rendered = load("reference.toml").to_toml();
    let pooler = rendered
        .split("[pooler]")
        .nth(1)
        .and_then(|rest| rest.split("[databases]").next())
        .expect("rendered [pooler] section");
    for line in pooler.lines().filter(|l| l.contains(" = ")) {
        let key = line.split(" = ").next().unwrap();
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{key} = "))),
            "reference.toml does not set {key}"
        );
    }
}

#[test]
fn sized_examples_use_transaction_pooling_and_one_shard_per_core() {
    for (name, cores) in [
        ("2-cores.toml", 2),
        ("8-cores.toml", 8),
        ("64-cores.toml", 64),
    ] {
        let c = load(name);
        assert_eq!(c.pooler.pool_mode, PoolMode::Transaction, "{name}");
        assert_eq!(c.pooler.shards, cores, "{name}");
        // Limits are split evenly over the shards: keep them multiples of the shard count.
        assert_eq!(c.pooler.default_pool_size % cores as u32, 0, "{name}");
        assert_eq!(c.pooler.min_pool_size % cores as u32, 0, "{name}");
        assert!(
            c.pooler.max_db_connections >= c.pooler.default_pool_size + c.pooler.reserve_pool_size,
            "{name}"
        );
        let auth_file = c.pooler.auth_file.as_deref().expect("auth_file");
        assert_eq!(auth_file, configs_dir().join("userlist.txt"), "{name}");
    }
}

#[test]
fn quickstart_matches_the_demo() {
    let c = load("quickstart.toml");
    assert_eq!(c.pooler.listen_addr, "127.0.0.1");
    assert_eq!(c.pooler.listen_port, 6432);
    assert_eq!(c.pooler.pool_mode, PoolMode::Transaction);
    assert_eq!(c.pooler.auth_type, pgring::config::AuthType::Md5);
    assert_eq!(
        c.pooler.auth_file.as_deref(),
        Some(configs_dir().join("userlist.txt").as_path())
    );
    let app = c.database("app").expect("app entry");
    assert_eq!(
        app.address,
        pgring::config::ServerAddress::Tcp {
            host: "127.0.0.1".into(),
            port: 5432
        }
    );
    assert_eq!(app.dbname.as_deref(), Some("app"));
}
