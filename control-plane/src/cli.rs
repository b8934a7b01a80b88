//! The operator's CLI, in the same binary: `tollgate keys|teams|users|access-groups|credentials|
//! models|audit|spend|prices|api ...` call the admin REST API (`--url` or `TOLLGATE_URL`, default
//! `http://127.0.0.1:8081`) with the key in `TOLLGATE_ADMIN_KEY` (an environment variable, never a
//! flag, so that it stays out of shell history and process lists). Answers are printed as JSON;
//! an error prints the API's message on stderr and exits non-zero (2 for a refused call, 1 when
//! the API could not be reached).

use clap::{Args, Subcommand};
use serde_json::{json, Value};

mod table;

#[derive(Args)]
pub struct Conn {
    /// The control plane's admin API.
    #[arg(long, env = "TOLLGATE_URL", default_value = "http://127.0.0.1:8081", global = true)]
    pub url: String,
    /// Print a compact table instead of JSON.
    #[arg(long, global = true)]
    pub table: bool,
}

#[derive(Subcommand)]
pub enum Keys {
    /// Create a key; the secret is printed once.
    Create {
        name: String,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        team: Option<String>,
        /// Allowed models (repeat, or comma-separated).
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        #[arg(long = "access-group", value_delimiter = ',')]
        access_groups: Vec<String>,
        /// Unix seconds.
        #[arg(long)]
        expires_at: Option<i64>,
        #[arg(long = "tag", value_delimiter = ',')]
        tags: Vec<String>,
    },
    List {
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        tag: Option<String>,
    },
    Get { id: String },
    Block { id: String },
    Unblock { id: String },
    /// A new secret under the same id; the old one works for the grace period.
    Rotate {
        id: String,
        #[arg(long)]
        grace_seconds: Option<i64>,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    Revoke { id: String },
}

#[derive(Subcommand)]
pub enum Teams {
    Create {
        name: String,
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        #[arg(long = "access-group", value_delimiter = ',')]
        access_groups: Vec<String>,
    },
    List,
    Get { id: String },
}

#[derive(Subcommand)]
pub enum Users {
    Create {
        name: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        team: Option<String>,
        /// admin, team_admin, member or viewer.
        #[arg(long, default_value = "member")]
        role: String,
    },
    List,
    Get { id: String },
    SetRole { id: String, role: String },
}

#[derive(Subcommand)]
pub enum Command {
    /// Virtual keys: create (the secret printed once), list, get, block, unblock, rotate, revoke.
    #[command(subcommand)]
    Keys(Keys),
    /// Teams: create, list, get.
    #[command(subcommand)]
    Teams(Teams),
    /// Users: create, list, get, set-role.
    #[command(subcommand)]
    Users(Users),
    /// Access groups: `create NAME PATTERN...`, `list`, `delete NAME`.
    AccessGroups {
        action: String,
        name: Option<String>,
        patterns: Vec<String>,
    },
    /// Provider credentials: `list`, or `create NAME` / `rotate NAME` with the secret read from
    /// `TOLLGATE_CREDENTIAL_API_KEY` (never a flag), or `delete NAME`.
    Credentials { action: String, name: Option<String> },
    /// Models: `list`, `delete NAME`, or `create`/`replace` with the model JSON on stdin.
    Models { action: String, name: Option<String> },
    /// The audit trail (newest first).
    Audit {
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        limit: Option<i64>,
    },
    /// Daily spend of a scope (key, user, team, model, provider).
    Spend {
        scope: String,
        id: Option<String>,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
    },
    /// Quotas: `list`, `state ID` (limit, used, reserved, resets at), `delete ID`, or `create METRIC LIMIT [--window SECONDS] [--key ID |
    /// --user ID | --team ID] [--model NAME] [--provider KIND] [--fail-mode closed|share] [--fit-output-tokens N]` (METRIC: requests,
    /// input_tokens, output_tokens, total_tokens, concurrency, or cost_usd with LIMIT in dollars:
    /// a budget).
    Quotas {
        action: String,
        args: Vec<String>,
        #[arg(long)]
        window: Option<u64>,
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        fail_mode: Option<String>,
        /// Lower a request's output limit to fit what is left, down to this many tokens,
        /// instead of refusing it (cost_usd, total_tokens, output_tokens).
        #[arg(long)]
        fit_output_tokens: Option<u64>,
    },
    /// Raw usage records, newest first (administrators).
    Usage {
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        request: Option<String>,
        #[arg(long)]
        limit: Option<i64>,
    },
    /// Any admin call: `api GET /admin/v1/me`, `api POST /admin/v1/teams '{"name":"x"}'`.
    Api { method: String, path: String, body: Option<String> },
}

/// (method, path, body) of one command.
fn request(cmd: Command) -> anyhow::Result<(&'static str, String, Option<Value>)> {
    let q = |pairs: &[(&str, Option<String>)]| -> String {
        let parts: Vec<String> =
            pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v)))).collect();
        if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
    };
    let list = |v: Vec<String>| if v.is_empty() { None } else { Some(v) };
    Ok(match cmd {
        Command::Keys(k) => match k {
            Keys::Create { name, user, team, models, access_groups, expires_at, tags } => (
                "POST",
                "/admin/v1/keys".into(),
                Some(json!({"name": name, "user_id": user, "team_id": team, "models": list(models),
                            "access_groups": access_groups, "expires_at": expires_at, "tags": tags})),
            ),
            Keys::List { team, user, tag } => ("GET", format!("/admin/v1/keys{}", q(&[("team_id", team), ("user_id", user), ("tag", tag)])), None),
            Keys::Get { id } => ("GET", format!("/admin/v1/keys/{}", encode(&id)), None),
            Keys::Block { id } => ("PATCH", format!("/admin/v1/keys/{}", encode(&id)), Some(json!({"blocked": true}))),
            Keys::Unblock { id } => ("PATCH", format!("/admin/v1/keys/{}", encode(&id)), Some(json!({"blocked": false}))),
            Keys::Rotate { id, grace_seconds, idempotency_key } => (
                "POST",
                format!("/admin/v1/keys/{}/rotate", encode(&id)),
                Some(json!({"grace_seconds": grace_seconds, "idempotency_key": idempotency_key})),
            ),
            Keys::Revoke { id } => ("DELETE", format!("/admin/v1/keys/{}", encode(&id)), None),
        },
        Command::Teams(t) => match t {
            Teams::Create { name, models, access_groups } => {
                ("POST", "/admin/v1/teams".into(), Some(json!({"name": name, "models": list(models), "access_groups": access_groups})))
            }
            Teams::List => ("GET", "/admin/v1/teams".into(), None),
            Teams::Get { id } => ("GET", format!("/admin/v1/teams/{}", encode(&id)), None),
        },
        Command::Users(u) => match u {
            Users::Create { name, email, team, role } => {
                ("POST", "/admin/v1/users".into(), Some(json!({"name": name, "email": email, "team_id": team, "role": role})))
            }
            Users::List => ("GET", "/admin/v1/users".into(), None),
            Users::Get { id } => ("GET", format!("/admin/v1/users/{}", encode(&id)), None),
            Users::SetRole { id, role } => ("PATCH", format!("/admin/v1/users/{}", encode(&id)), Some(json!({"role": role}))),
        },
        Command::AccessGroups { action, name, patterns } => match (action.as_str(), name) {
            ("list", _) => ("GET", "/admin/v1/access-groups".into(), None),
            ("create", Some(n)) => ("POST", "/admin/v1/access-groups".into(), Some(json!({"name": n, "models": patterns}))),
            ("update", Some(n)) => ("PATCH", format!("/admin/v1/access-groups/{}", encode(&n)), Some(json!({"models": patterns}))),
            ("delete", Some(n)) => ("DELETE", format!("/admin/v1/access-groups/{}", encode(&n)), None),
            _ => anyhow::bail!("access-groups: list | create NAME PATTERN... | update NAME PATTERN... | delete NAME"),
        },
        Command::Credentials { action, name } => {
            let secret = || {
                std::env::var("TOLLGATE_CREDENTIAL_API_KEY")
                    .ok()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| anyhow::anyhow!("set TOLLGATE_CREDENTIAL_API_KEY to the provider key (it is never a flag)"))
            };
            match (action.as_str(), name) {
                ("list", _) => ("GET", "/admin/v1/credentials".into(), None),
                ("create", Some(n)) => ("POST", "/admin/v1/credentials".into(), Some(json!({"name": n, "api_key": secret()?}))),
                ("rotate", Some(n)) => ("PUT", format!("/admin/v1/credentials/{}", encode(&n)), Some(json!({"api_key": secret()?}))),
                ("delete", Some(n)) => ("DELETE", format!("/admin/v1/credentials/{}", encode(&n)), None),
                _ => anyhow::bail!("credentials: list | create NAME | rotate NAME | delete NAME"),
            }
        }
        Command::Models { action, name } => {
            let stdin = || -> anyhow::Result<Value> { Ok(serde_json::from_reader(std::io::stdin().lock())?) };
            match (action.as_str(), name) {
                ("list", _) => ("GET", "/admin/v1/models".into(), None),
                ("create", _) => ("POST", "/admin/v1/models".into(), Some(stdin()?)),
                ("replace", Some(n)) => ("PUT", format!("/admin/v1/models/{}", encode(&n)), Some(stdin()?)),
                ("delete", Some(n)) => ("DELETE", format!("/admin/v1/models/{}", encode(&n)), None),
                _ => anyhow::bail!("models: list | create (JSON on stdin) | replace NAME (JSON on stdin) | delete NAME"),
            }
        }
        Command::Audit { target, action, limit } => {
            ("GET", format!("/admin/v1/audit{}", q(&[("target", target), ("action", action), ("limit", limit.map(|l| l.to_string()))])), None)
        }
        Command::Spend { scope, id, from, to } => {
            ("GET", format!("/admin/v1/spend{}", q(&[("scope", Some(scope)), ("scope_id", id), ("from", from), ("to", to)])), None)
        }
        Command::Quotas { action, args, window, key, user, team, model, provider, fail_mode, fit_output_tokens } => match (action.as_str(), args.as_slice()) {
            ("list", []) => ("GET", "/admin/v1/quotas".into(), None),
            ("delete", [id]) => ("DELETE", format!("/admin/v1/quotas/{}", encode(id)), None),
            ("state", [id]) => ("GET", format!("/admin/v1/quotas/{}/state", encode(id)), None),
            ("create", [metric, limit]) => {
                let mut body = json!({"metric": metric, "window_seconds": window.unwrap_or(0), "key_id": key, "model": model});
                for (field, value) in [("user_id", user), ("team_id", team), ("provider", provider), ("fail_mode", fail_mode)] {
                    if let Some(v) = value {
                        body[field] = json!(v);
                    }
                }
                if let Some(n) = fit_output_tokens {
                    body["fit_output_tokens"] = json!(n);
                }
                if metric == "cost_usd" {
                    body["limit_usd"] = json!(limit);
                } else {
                    body["limit"] = json!(limit.parse::<u64>().map_err(|_| anyhow::anyhow!("LIMIT must be a whole number (dollars for cost_usd)"))?);
                }
                ("POST", "/admin/v1/quotas".into(), Some(body))
            }
            _ => anyhow::bail!("quotas: list | state ID | create METRIC LIMIT [--window SECONDS] [--key ID | --user ID | --team ID] [--model NAME] [--provider KIND] [--fail-mode closed|share] [--fit-output-tokens N] | delete ID"),
        },
        Command::Usage { key, request, limit } => (
            "GET",
            format!("/admin/v1/usage{}", q(&[("key_id", key), ("request_id", request), ("limit", limit.map(|l| l.to_string()))])),
            None,
        ),
        Command::Api { method, path, body } => {
            let method = match method.to_ascii_uppercase().as_str() {
                "GET" => "GET",
                "POST" => "POST",
                "PUT" => "PUT",
                "PATCH" => "PATCH",
                "DELETE" => "DELETE",
                other => anyhow::bail!("unknown method {other}"),
            };
            (method, path, body.map(|b| serde_json::from_str(&b)).transpose()?)
        }
    })
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Runs one CLI command; returns the process exit code.
pub async fn run(conn: Conn, cmd: Command) -> i32 {
    match call(conn, cmd).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tollgate: {e:#}");
            1
        }
    }
}

async fn call(conn: Conn, cmd: Command) -> anyhow::Result<i32> {
    let key = std::env::var("TOLLGATE_ADMIN_KEY").ok().filter(|k| !k.is_empty());
    let (method, path, body) = request(cmd)?;
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?;
    let url = format!("{}{path}", conn.url.trim_end_matches('/'));
    let mut req = client.request(reqwest::Method::from_bytes(method.as_bytes())?, &url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.map_err(|e| anyhow::anyhow!("could not reach {}: {e}", conn.url))?;
    let status = resp.status();
    let text = resp.text().await?;
    if status.is_success() {
        match serde_json::from_str::<Value>(&text) {
            Ok(v) => match table::render(&v).filter(|_| conn.table) {
                Some(t) => print!("{t}"),
                None => println!("{}", serde_json::to_string_pretty(&v)?),
            },
            Err(_) if text.is_empty() => {}
            Err(_) => println!("{text}"),
        }
        return Ok(0);
    }
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or(text);
    if status == reqwest::StatusCode::UNAUTHORIZED {
        eprintln!("tollgate: {status}: {message} (set TOLLGATE_ADMIN_KEY)");
    } else {
        eprintln!("tollgate: {status}: {message}");
    }
    Ok(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_map_to_admin_calls() {
        let (m, p, b) = request(Command::Keys(Keys::Create {
            name: "ci".into(),
            user: None,
            team: Some("team 1".into()),
            models: vec!["a".into(), "b".into()],
            access_groups: vec![],
            expires_at: None,
            tags: vec![],
        }))
        .unwrap();
        assert_eq!((m, p.as_str()), ("POST", "/admin/v1/keys"));
        assert_eq!(b.unwrap()["models"], json!(["a", "b"]));
        let (_, p, _) = request(Command::Keys(Keys::List { team: Some("t 1&x".into()), user: None, tag: None })).unwrap();
        assert_eq!(p, "/admin/v1/keys?team_id=t%201%26x");
        let (m, p, _) = request(Command::Keys(Keys::Revoke { id: "key/../x".into() })).unwrap();
        assert_eq!((m, p.as_str()), ("DELETE", "/admin/v1/keys/key%2F..%2Fx"));
        assert!(request(Command::Api { method: "TRACE".into(), path: "/".into(), body: None }).is_err());
    }
}
