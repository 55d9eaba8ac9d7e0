//! `create`: a new key with a CSPRNG id and secret; only the secret's hash is stored, and the
//! secret is printed once.

use crate::cli::CreateArgs;
use crate::context::Context;
use crate::daemon_link::{self, AfterWrite};
use crate::error::CtlError;
use crate::{keyview, secrets, validate};
use heare_auth_store::rate_limit::RateLimit;
use heare_auth_store::secret_hash::SecretDigest;
use heare_auth_store::timestamp;
use serde_json::{Map, Value, json};

/// The new key, checked, before it is written.
struct NewKey {
    id: String,
    name: String,
    created_at: String,
    expires_at: Option<String>,
    metadata: Map<String, Value>,
    scopes: Vec<String>,
    rate_limit: Option<RateLimit>,
}

pub async fn run(context: &Context, args: &CreateArgs) -> Result<(), CtlError> {
    let new = NewKey::from_args(args)?;
    let secret = secrets::new_secret();
    let key = new.stored(&secret);
    crate::commit::edit(context, "create", |document| {
        document.push(key.clone());
        Ok(())
    })
    .await?;

    if args.json {
        // One JSON object, so the reload's outcome comes before it is printed; asked with a short
        // deadline, since the object holds the only copy of the new secret.
        let daemon = daemon_link::reload_within(
            context.socket(),
            args.write.no_reload,
            daemon_link::JSON_RELOAD_TIMEOUT,
        );
        println!("{}", new.json(&secret, &daemon));
        eprintln!("{}", super::SAVE_NOW);
        daemon.report();
        return Ok(());
    }
    // The secret is shown before the reload, which may wait for the daemon.
    new.print(&secret);
    eprintln!("{}", super::SAVE_NOW);
    daemon_link::reload_and_report(context.socket(), args.write.no_reload);
    Ok(())
}

/// `--rate-limit LIMIT [--burst N]`; `--burst` alone is refused (clap refuses it first).
fn rate_limit_of(args: &CreateArgs) -> Result<Option<RateLimit>, CtlError> {
    match (args.rate_limit.as_deref(), args.burst) {
        (Some(text), burst) => validate::rate_limit(text, burst).map(Some),
        (None, Some(_)) => Err(CtlError::Usage("--burst needs --rate-limit".into())),
        (None, None) => Ok(None),
    }
}

impl NewKey {
    /// Checks everything given before anything is written: a refusal writes nothing.
    fn from_args(args: &CreateArgs) -> Result<Self, CtlError> {
        let now = timestamp::now();
        Ok(NewKey {
            id: secrets::new_key_id(),
            name: validate::name(&args.name)?,
            created_at: timestamp::format_seconds(now),
            expires_at: validate::expiry(
                args.expires_at.as_deref(),
                args.expires_in.as_deref(),
                args.force,
                now,
            )?,
            metadata: validate::metadata(args.metadata.as_deref(), &args.meta)?,
            scopes: validate::scopes(&args.scopes)?,
            rate_limit: rate_limit_of(args)?,
        })
    }

    /// The key as the key file stores it: the secret's hash only.
    fn stored(&self, secret: &str) -> Map<String, Value> {
        let mut key = Map::new();
        key.insert("id".into(), json!(self.id));
        key.insert(
            "secret_hash".into(),
            json!(SecretDigest::of_secret(secret).to_field()),
        );
        key.insert("name".into(), json!(self.name));
        key.insert("secret_type".into(), json!("shared_secret"));
        key.insert("created_at".into(), json!(self.created_at));
        key.insert("updated_at".into(), Value::Null);
        key.insert("expires_at".into(), json!(self.expires_at));
        key.insert("metadata".into(), Value::Object(self.metadata.clone()));
        if !self.scopes.is_empty() {
            key.insert("scopes".into(), json!(self.scopes));
        }
        if let Some(limit) = &self.rate_limit {
            key.insert("rate_limit".into(), limit.to_field());
        }
        key
    }

    /// `create --json`'s object, with the secret and what became of the reload.
    fn json(&self, secret: &str, daemon: &AfterWrite) -> Value {
        json!({"id": self.id, "secret": secret, "name": self.name,
               "created_at": self.created_at, "expires_at": self.expires_at,
               "metadata": self.metadata, "scopes": self.scopes,
               "rate_limit": self.rate_limit.as_ref().map(keyview::limit_json),
               "daemon": daemon.to_json()})
    }

    fn print(&self, secret: &str) {
        println!("Created API key:");
        println!("  ID:      {}", self.id);
        println!("  Secret:  {secret}");
        println!("  Name:    {}", self.name);
        println!("  Created: {}", self.created_at);
        println!(
            "  Expires: {}",
            self.expires_at.as_deref().unwrap_or("never")
        );
        if !self.scopes.is_empty() {
            println!("  Scopes:  {}", self.scopes.join(" "));
        }
        if let Some(limit) = &self.rate_limit {
            println!("  Limit:   {limit}");
        }
    }
}
