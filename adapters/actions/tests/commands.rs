//! `command` actions as the runner runs them, with real processes:
//!
//! - a program that never reads its input, given an envelope far larger than
//!   a pipe holds, is killed at its timeout (the timeout covers writing stdin);
//! - a command line outside the operator's rules is refused before it runs
//!   (`env` allowed alone does not allow `env sh -c …`);
//! - the child's environment is only what the operator passes through plus
//!   the fire's `MINOOTS_*` variables, and its output reaches the delivery
//!   history only when the operator allows it.
#![cfg(not(madsim))]

mod support;

use std::sync::Arc;
use std::time::Duration;

use minoots_actions::store::NewDelivery;
use minoots_actions::{ExecConfig, Executor, SigningKeys, TenantKeys, Undelivered};
use minoots_core::action::{Action, ActionKind, CommandAction};
use minoots_core::command::CommandPolicy;
use minoots_node::clock::SystemClock;

async fn executor(config: ExecConfig, dir: &tempfile::TempDir) -> Executor {
    let clock = Arc::new(SystemClock::new());
    let keys = TenantKeys::new(SigningKeys::default(), support::sqlite_store(dir).await, clock.clone());
    Executor::new(config, Arc::new(keys), None, clock).expect("executor")
}

fn config(rules: &[&str]) -> ExecConfig {
    ExecConfig {
        commands: CommandPolicy::from_rules(&rules.iter().map(|r| (*r).to_owned()).collect::<Vec<_>>())
            .expect("rules"),
        command_env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        ..ExecConfig::default()
    }
}

fn command(program: &str, args: &[&str], timeout_ms: u64) -> Action {
    Action {
        id: "cmd".into(),
        kind: ActionKind::Command(CommandAction {
            program: program.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            timeout_ms: Some(timeout_ms),
        }),
    }
}

fn delivery(envelope: String) -> NewDelivery {
    NewDelivery { envelope, ..support::delivery(1) }
}

/// Whether a process whose command line contains `text` is running.
fn running(text: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-f", text])
        .output()
        .map(|out| out.status.success())
        .expect("pgrep")
}

#[tokio::test]
async fn a_program_that_never_reads_its_input_is_killed_at_its_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runner = executor(config(&["sleep *"]), &dir).await;
    let envelope = format!("{{\"padding\":\"{}\"}}", "x".repeat(512 * 1024));
    let (fire, sleep) = (delivery(envelope), command("sleep", &["31.4159"], 300));
    let attempt = runner.run(&fire, &sleep, 1);
    let result = tokio::time::timeout(Duration::from_secs(60), attempt).await.expect("the attempt ended");
    match result {
        Err(Undelivered::Failed(failure)) => {
            assert!(failure.retryable);
            assert!(failure.error.contains("timed out"), "{}", failure.error);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    for _ in 0..100 {
        if !running("sleep 31.4159") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the timed-out program was not killed");
}

#[tokio::test]
async fn a_command_line_outside_the_rules_is_refused_before_it_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runner = executor(config(&["env"]), &dir).await;
    match runner.run(&delivery("{}".into()), &command("env", &["sh", "-c", "id"], 5_000), 1).await {
        Err(Undelivered::Failed(failure)) => {
            assert!(!failure.retryable, "refused for good");
            assert!(failure.error.contains("the arguments of env"), "{}", failure.error);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn the_environment_is_only_what_the_operator_passes_and_output_stays_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let visible = executor(ExecConfig { command_output_visible: true, ..config(&["env"]) }, &dir).await;
    let shown = visible.run(&delivery("{}".into()), &command("env", &[], 5_000), 1).await.expect("ran");
    let output = shown.output.expect("output kept when the operator allows it");
    let names: Vec<&str> =
        output.lines().filter_map(|line| line.split_once('=').map(|(name, _)| name)).collect();
    assert!(names.contains(&"MINOOTS_TIMER_ID") && names.contains(&"PATH"), "{output}");
    for name in names {
        assert!(
            name == "PATH" || name.starts_with("MINOOTS_"),
            "{name} leaked into the command's environment"
        );
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let private = executor(config(&["env"]), &dir).await;
    let hidden = private.run(&delivery("{}".into()), &command("env", &[], 5_000), 1).await.expect("ran");
    assert_eq!(hidden.output, None, "output is kept from the tenant by default");
    assert_eq!(hidden.status_code, Some(0));
}

/// Waits until no process with `text` in its command line runs; false after 5 s.
async fn gone(text: &str) -> bool {
    for _ in 0..100 {
        if !running(text) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// What a command starts ends with its attempt: a timed-out program's
/// children are killed with it, and a program that left a child running
/// in the background when it finished does not leave it behind.
#[tokio::test]
async fn a_commands_children_end_with_its_attempt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runner = executor(config(&["sh -c *"]), &dir).await;
    let fire = delivery("{}".into());

    let hangs = command("sh", &["-c", "sleep 27.18281 & sleep 27.18282"], 300);
    let result = tokio::time::timeout(Duration::from_secs(60), runner.run(&fire, &hangs, 1)).await;
    assert!(matches!(result, Ok(Err(Undelivered::Failed(_)))), "{result:?}");
    assert!(gone("sleep 27.18282").await, "the program itself was killed");
    assert!(gone("sleep 27.18281").await, "its background child was killed with it");

    let leaves = command("sh", &["-c", "sleep 27.18283 > /dev/null 2>&1 &"], 10_000);
    let result = tokio::time::timeout(Duration::from_secs(60), runner.run(&fire, &leaves, 1)).await;
    assert!(matches!(result, Ok(Ok(_))), "the program itself succeeded: {result:?}");
    assert!(gone("sleep 27.18283").await, "the child it left behind was killed");
}
