//! `minoots dlq list|show|replay` and `minoots timers deliveries`: the
//! dead-letter queue and delivery history of a running server, over its REST
//! API (`/api/dlq…`, `/api/timers/{id}/deliveries`).

use std::error::Error;

use serde_json::Value;

/// Where the server's REST API is, and who calls.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// The server's REST base URL.
    #[arg(long, global = true, env = "MINOOTS_API_URL", default_value = "http://127.0.0.1:4000")]
    pub api_url: String,
    /// API key.
    #[arg(
        long,
        global = true,
        env = "MINOOTS_API_KEY",
        default_value = "local-dev-key",
        hide_env_values = true
    )]
    pub api_key: String,
}

/// `minoots dlq …`.
#[derive(Debug, clap::Args)]
pub struct DlqArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Machine output: JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: DlqCommand,
}

/// Dead-letter commands.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters not replayed yet (oldest first).
    List {
        /// Also list those already replayed.
        #[arg(long)]
        include_replayed: bool,
        /// Most to list.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one dead letter with its attempts.
    Show {
        /// Dead-letter id.
        id: i64,
    },
    /// Run dead-lettered deliveries again (same idempotency key, fresh attempts).
    Replay {
        /// Dead-letter id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every dead letter not replayed yet.
        #[arg(long)]
        all: bool,
    },
}

async fn call(api: &ApiArgs, method: reqwest::Method, path: &str) -> Result<Value, Box<dyn Error>> {
    let url = format!("{}{path}", api.api_url.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .request(method, &url)
        .header("x-api-key", &api.api_key)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("request failed");
        return Err(format!("{url}: {status}: {message}").into());
    }
    Ok(body)
}

fn print_attempts(attempts: &[Value]) {
    for a in attempts {
        println!(
            "  #{:<3} {:<10} {:<9} {:>6} ms  status={}  {}  key={}",
            a["attempt"],
            a["actionId"].as_str().unwrap_or(""),
            a["outcome"].as_str().unwrap_or(""),
            a["durationMs"],
            a["statusCode"],
            a["error"].as_str().unwrap_or(""),
            a["idempotencyKey"].as_str().unwrap_or(""),
        );
    }
}

/// Runs a `dlq` command.
pub async fn run(args: DlqArgs) -> Result<(), Box<dyn Error>> {
    let api = &args.api;
    let json = args.json;
    match args.command {
        DlqCommand::List { include_replayed, limit } => {
            let body = call(
                api,
                reqwest::Method::GET,
                &format!("/api/dlq?limit={limit}&includeReplayed={include_replayed}"),
            )
            .await?;
            if json {
                println!("{body}");
                return Ok(());
            }
            let list = body["deadLetters"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no dead letters");
            }
            for d in list {
                println!(
                    "{:<6} {}  attempts={}  {}{}",
                    d["id"],
                    d["idempotencyKey"].as_str().unwrap_or(""),
                    d["attempts"],
                    d["lastError"].as_str().unwrap_or(""),
                    if d["replayedAtMs"].is_null() { "" } else { "  (replayed)" }
                );
            }
        }
        DlqCommand::Show { id } => {
            let body = call(api, reqwest::Method::GET, &format!("/api/dlq/{id}")).await?;
            if json {
                println!("{body}");
                return Ok(());
            }
            println!("dead letter {}: {}", body["id"], body["idempotencyKey"].as_str().unwrap_or(""));
            println!(
                "  timer {} occurrence {} action {} ({})",
                body["timerId"], body["occurrence"], body["actionId"], body["kind"]
            );
            println!("  last error: {}", body["lastError"].as_str().unwrap_or("-"));
            print_attempts(body["history"].as_array().map(Vec::as_slice).unwrap_or_default());
        }
        DlqCommand::Replay { id, all } => {
            let path = match (id, all) {
                (Some(id), false) => format!("/api/dlq/{id}/replay"),
                _ => "/api/dlq/replay".to_owned(),
            };
            let body = call(api, reqwest::Method::POST, &path).await?;
            if json {
                println!("{body}");
            } else {
                let ids = body["replayed"].as_array().cloned().unwrap_or_default();
                println!("replayed {} dead letter(s)", ids.len());
            }
        }
    }
    Ok(())
}

/// `minoots timers deliveries ID`.
pub async fn deliveries(api: &ApiArgs, id: &str, json: bool) -> Result<(), Box<dyn Error>> {
    let body = call(api, reqwest::Method::GET, &format!("/api/timers/{id}/deliveries")).await?;
    if json {
        println!("{body}");
        return Ok(());
    }
    let attempts = body["deliveries"].as_array().cloned().unwrap_or_default();
    println!("timer {id}: {} attempt(s)", attempts.len());
    print_attempts(&attempts);
    Ok(())
}
