//! The integration tests include pgring's test support (`../tests/support/mod.rs`), whose
//! `Pgring` launcher names the pgring binary with `env!("CARGO_BIN_EXE_pgring")`. Cargo
//! only defines that inside the pgring package, so define it here for loadgen's targets;
//! loadgen's tests do not launch pgring, so the value is only a placeholder.

fn main() {
    println!("cargo:rustc-env=CARGO_BIN_EXE_pgring=pgring-binary-not-built-by-loadgen");
    println!("cargo:rerun-if-changed=build.rs");
}
