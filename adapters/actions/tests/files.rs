//! `file` actions as the runner runs them: each tenant writes in its own
//! directory under the base, and a symlink planted under the base (as the
//! file, or as a directory on the way) is refused for good without touching
//! or creating anything outside.
#![cfg(all(unix, not(madsim)))]

mod support;

use std::sync::Arc;

use minoots_actions::store::NewDelivery;
use minoots_actions::{ExecConfig, Executor, SigningKeys, TenantKeys, Undelivered};
use minoots_core::action::{Action, ActionKind, FileAction};
use minoots_node::clock::SystemClock;
use serde_json::json;

fn write(path: &str, text: &str) -> Action {
    Action {
        id: "file".into(),
        kind: ActionKind::File(FileAction { path: path.into(), content: Some(json!(text)), append: false }),
    }
}

fn delivery_of(tenant: &str) -> NewDelivery {
    NewDelivery { tenant_id: tenant.into(), ..support::delivery(1) }
}

#[tokio::test]
async fn tenants_write_apart_and_planted_symlinks_lead_nowhere() {
    let root = tempfile::tempdir().expect("tempdir");
    let (base, outside) = (root.path().join("base"), root.path().join("outside"));
    std::fs::create_dir_all(&base).expect("base");
    std::fs::create_dir_all(&outside).expect("outside");
    let clock = Arc::new(SystemClock::new());
    let keys = TenantKeys::new(SigningKeys::default(), support::sqlite_store(&root).await, clock.clone());
    let config = ExecConfig { file_base_dir: Some(base.clone()), ..ExecConfig::default() };
    let runner = Executor::new(config, Arc::new(keys), None, clock).expect("executor");

    runner.run(&delivery_of("tenant-a"), &write("reports/today.txt", "a"), 1).await.expect("a writes");
    runner.run(&delivery_of("tenant-b"), &write("reports/today.txt", "b"), 1).await.expect("b writes");
    assert_eq!(std::fs::read_to_string(base.join("tenant-a/reports/today.txt")).expect("a"), "a");
    assert_eq!(std::fs::read_to_string(base.join("tenant-b/reports/today.txt")).expect("b"), "b");

    std::fs::write(outside.join("victim"), "keep").expect("victim");
    std::os::unix::fs::symlink(outside.join("victim"), base.join("tenant-a/reports/link")).expect("symlink");
    std::os::unix::fs::symlink(&outside, base.join("tenant-a/escape")).expect("symlink");
    for path in ["reports/link", "escape/made/file"] {
        match runner.run(&delivery_of("tenant-a"), &write(path, "pwned"), 1).await {
            Err(Undelivered::Failed(failure)) => assert!(!failure.retryable, "{path}: {}", failure.error),
            other => panic!("{path}: expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(std::fs::read_to_string(outside.join("victim")).expect("victim"), "keep");
    assert!(!outside.join("made").exists(), "nothing created outside the base");
}
