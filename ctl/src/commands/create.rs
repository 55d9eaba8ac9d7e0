//! `create`: a new key with a CSPRNG id and secret; only the secret's hash is stored, and the
//! secret is printed once.

use crate::cli::CreateArgs;
use crate::context::Context;
use crate::daemon_link;
use crate::error::CtlError;
use crate::{secrets, validate};
use heare_auth_store::secret_hash::SecretDigest;
use heare_auth_store::timestamp;
use serde_json::{Map, Value, json};

pub async fn run(context: &Context, args: &CreateArgs) -> Result<(), CtlError> {
    let now = timestamp::now();
    let name = validate::name(&args.name)?;
    let metadata = validate::metadata(args.metadata.as_deref(), &args.meta)?;
    let expires_at = validate::expiry(
        args.expires_at.as_deref(),
        args.expires_in.as_deref(),
        args.force,
        now,
    )?;
    let scopes = validate::scopes(&args.scopes)?;
    let id = secrets::new_key_id();
    let secret = secrets::new_secret();
    let created_at = timestamp::format_seconds(now);

    let mut key = Map::new();
    key.insert("id".into(), json!(id));
    key.insert(
        "secret_hash".into(),
        json!(SecretDigest::of_secret(&secret).to_field()),
    );
    key.insert("name".into(), json!(name));
    key.insert("secret_type".into(), json!("shared_secret"));
    key.insert("created_at".into(), json!(created_at));
    key.insert("updated_at".into(), Value::Null);
    key.insert("expires_at".into(), json!(expires_at));
    key.insert("metadata".into(), Value::Object(metadata.clone()));
    if !scopes.is_empty() {
        key.insert("scopes".into(), json!(scopes));
    }
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
        let out = json!({"id": id, "secret": secret, "name": name, "created_at": created_at,
                         "expires_at": expires_at, "metadata": metadata, "scopes": scopes,
                         "daemon": daemon.to_json()});
        println!("{out}");
        eprintln!("{}", super::SAVE_NOW);
        daemon.report();
        return Ok(());
    }
    // The secret is shown before the reload, which may wait for the daemon.
    println!("Created API key:");
    println!("  ID:      {id}");
    println!("  Secret:  {secret}");
    println!("  Name:    {name}");
    println!("  Created: {created_at}");
    println!("  Expires: {}", expires_at.as_deref().unwrap_or("never"));
    if !scopes.is_empty() {
        println!("  Scopes:  {}", scopes.join(" "));
    }
    eprintln!("{}", super::SAVE_NOW);
    daemon_link::reload_and_report(context.socket(), args.write.no_reload);
    Ok(())
}
