//! Compiles the PostgreSQL variants of the integration tests in only when a server is named,
//! so that without one they show up as "ignored" with the reason, never as passed.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(pg_tests)");
    println!("cargo::rerun-if-env-changed=SWITCHYARD_TEST_POSTGRES_URL");
    if std::env::var_os("SWITCHYARD_TEST_POSTGRES_URL").is_some_and(|url| !url.is_empty()) {
        println!("cargo::rustc-cfg=pg_tests");
    }
}
