//! `usage`: every key of the store with its verifications and last use — on this host (the
//! local daemon's `GET /usage`) or over the fleet (`--fleet`: every host's report under
//! `usage_report`) — so an operator sees keys nobody uses (`--unused-for 30d`) and keys whose
//! clients still present the previous secret after a rotation (`PREVIOUS SECRET`). Keys that
//! have usage but are no longer in the store are listed too, as `not in store` (at most
//! `usage_source::MAX_OTHER_KEYS` of them). The store is read first, and an unreadable store
//! fails the command before any usage is read: the usage shown is that of the store's keys, and
//! only the store's key ids bound what the reports may make the merge hold.

use crate::context::Context;
use crate::error::CtlError;
use crate::keyview;
use crate::usage_source::{self, FleetReading, Merged, StoredIds, UsageByKey};
use heare_auth_store::timestamp::{self, UnixMillis};
use heare_auth_store::{duration, size};
use serde_json::{Map, Value, json};
use std::io::Write;

/// What `usage` was asked.
pub struct UsageArgs {
    pub unused_for: Option<String>,
    pub json: bool,
    pub fleet: bool,
    pub detailed: bool,
    /// `--max-bytes`, as given.
    pub max_bytes: String,
}

pub async fn run(context: &Context, args: &UsageArgs) -> Result<(), CtlError> {
    let now = timestamp::now();
    let unused_since = match &args.unused_for {
        Some(text) => {
            let span =
                duration::parse(text).map_err(|e| CtlError::Usage(format!("--unused-for: {e}")))?;
            Some(now.saturating_sub(span.as_millis() as i64))
        }
        None => None,
    };
    let max_bytes =
        size::parse(&args.max_bytes).map_err(|e| CtlError::Usage(format!("--max-bytes: {e}")))?;
    let (stored, _) = context.read().await?;
    let ids: StoredIds = stored
        .document
        .keys()
        .filter_map(|key| key.get("id").and_then(Value::as_str))
        .collect();
    let usage = gather(context, args, &ids, max_bytes).await?;
    let mut rows = joined(stored.document.keys(), usage, now);
    if let Some(since) = unused_since {
        rows.retain(|row| unused(row, since));
    }
    if args.json {
        print_json(&rows, args.detailed)
    } else {
        print_rows(&rows, args.detailed);
        Ok(())
    }
}

/// The usage of the keys `stored` names (and of a bounded number of others), from the local
/// daemon or, with `--fleet`, every host's report.
async fn gather(
    context: &Context,
    args: &UsageArgs,
    stored: &StoredIds<'_>,
    max_bytes: u64,
) -> Result<UsageByKey, CtlError> {
    if !args.fleet {
        return usage_source::local(context.socket(), stored, args.detailed);
    }
    let Some(prefix) = &context.config.usage.report else {
        return Err(CtlError::Usage(
            "--fleet reads the reports under usage_report: set usage_report = \"s3://BUCKET/PREFIX/\" in the configuration".into(),
        ));
    };
    let reading = FleetReading {
        max_bytes,
        detailed: args.detailed,
    };
    let (merged, hosts) =
        usage_source::fleet(prefix, &context.config.store.s3, stored, &reading).await?;
    eprintln!("{hosts} host report(s) under {prefix}");
    Ok(merged)
}

/// The rows as one JSON array, written row by row (a fleet may use a million keys).
fn print_json(rows: &[Row], detailed: bool) -> Result<(), CtlError> {
    let failed = |e: std::io::Error| CtlError::Other(format!("cannot write the output: {e}"));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    out.write_all(b"[").map_err(failed)?;
    for (n, row) in rows.iter().enumerate() {
        if n > 0 {
            out.write_all(b",").map_err(failed)?;
        }
        serde_json::to_writer(&mut out, &row.to_json(detailed)).map_err(|e| failed(e.into()))?;
    }
    out.write_all(b"]\n").map_err(failed)?;
    out.flush().map_err(failed)
}

/// One key with its usage.
struct Row {
    id: String,
    /// The key's public view; `None` for usage of a key no longer in the store.
    key: Option<Value>,
    usage: Merged,
}

impl Row {
    fn field(&self, name: &str) -> Value {
        self.key
            .as_ref()
            .map_or(Value::Null, |key| key[name].clone())
    }

    fn state(&self) -> Value {
        match &self.key {
            Some(key) => key["state"].clone(),
            None => json!("not in store"),
        }
    }

    fn to_json(&self, detailed: bool) -> Value {
        let mut row = Map::new();
        row.insert("key_id".into(), json!(self.id));
        for field in ["name", "created_at", "expires_at"] {
            row.insert(field.into(), self.field(field));
        }
        row.insert("state".into(), self.state());
        row.insert("verifications".into(), json!(self.usage.verifications));
        let last = self.usage.last_verified_at.map(timestamp::format);
        row.insert("last_verified_at".into(), json!(last));
        let previous = self.usage.last_used_previous_secret;
        row.insert("last_used_previous_secret".into(), json!(previous));
        if detailed {
            let hosts: Vec<Value> = self
                .usage
                .hosts
                .iter()
                .map(|host| {
                    let last = host.last_verified_at.map(timestamp::format);
                    json!({"host_id": &*host.host, "verifications": host.verifications,
                           "last_verified_at": last})
                })
                .collect();
            row.insert("hosts".into(), Value::Array(hosts));
        }
        Value::Object(row)
    }
}

/// Every stored key with its usage, then usage of keys the store no longer has (each key's usage
/// moved out of `usage`, not copied).
fn joined<'a>(
    keys: impl Iterator<Item = &'a Map<String, Value>>,
    mut usage: UsageByKey,
    now: UnixMillis,
) -> Vec<Row> {
    let mut rows: Vec<Row> = keys
        .map(|key| {
            let id = key.get("id").and_then(Value::as_str).unwrap_or_default();
            Row {
                id: id.to_string(),
                key: Some(keyview::public(key, now)),
                usage: usage.remove(id).unwrap_or_default(),
            }
        })
        .collect();
    let gone = usage
        .into_iter()
        .filter(|(_, merged)| merged.verifications > 0)
        .map(|(id, usage)| Row {
            id,
            key: None,
            usage,
        });
    rows.extend(gone);
    rows
}

/// Not used since `since` (or never), and created before it: a key made yesterday is not
/// "unused for 30 days".
fn unused(row: &Row, since: UnixMillis) -> bool {
    let used_since = row.usage.last_verified_at.is_some_and(|at| at >= since);
    let created = row.field("created_at");
    let young = created
        .as_str()
        .and_then(|text| timestamp::parse(text).ok())
        .is_some_and(|at| at >= since);
    !used_since && !young
}

fn print_rows(rows: &[Row], detailed: bool) {
    let columns = [
        "ID",
        "NAME",
        "STATE",
        "CREATED",
        "EXPIRES",
        "VERIFICATIONS",
        "LAST VERIFIED",
        "PREVIOUS SECRET",
    ];
    let mut table = Vec::new();
    for row in rows {
        table.push(vec![
            keyview::text(&json!(row.id)),
            keyview::text(&row.field("name")),
            keyview::text(&row.state()),
            keyview::text(&row.field("created_at")),
            keyview::text(&row.field("expires_at")),
            row.usage.verifications.to_string(),
            row.usage
                .last_verified_at
                .map_or_else(|| "never".to_string(), timestamp::format),
            if row.usage.last_used_previous_secret {
                "still in use"
            } else {
                ""
            }
            .to_string(),
        ]);
        if detailed {
            for host in &row.usage.hosts {
                let last = keyview::text(&json!(host.last_verified_at.map(timestamp::format)));
                let name = keyview::text(&json!(&*host.host));
                table.push(vec![
                    format!("  on {name}"),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    host.verifications.to_string(),
                    last,
                    String::new(),
                ]);
            }
        }
    }
    keyview::print_table(&columns, &table);
}
