//! `rate-limit KEY LIMIT [--burst N]`: sets a key's `rate_limit` member (`100/1m`), or removes
//! it (`none`), as one change of the log like every other edit of a key. Setting the limit a key
//! already has is written as any other edit is (a new `updated_at`, a change in the log).

use crate::context::Context;
use crate::daemon_link;
use crate::error::CtlError;
use crate::validate;
use heare_auth_store::rate_limit::RateLimit;
use heare_auth_store::timestamp;
use serde_json::{Map, Value};

pub async fn run(
    context: &Context,
    id: &str,
    limit: &str,
    burst: Option<u64>,
    no_reload: bool,
) -> Result<(), CtlError> {
    let limit = validate::limit_or_none(limit, burst)?;
    let now = timestamp::now();
    crate::commit::edit(context, "rate-limit", |document| {
        let key = super::key_mut(document, id)?;
        apply(key, limit.as_ref());
        super::touch(key, now);
        Ok(())
    })
    .await?;
    println!("{id} rate limit: {}", shown(limit.as_ref()));
    daemon_link::reload_and_report(context.socket(), no_reload);
    Ok(())
}

/// Sets the key's member to `limit`, or removes it for none.
fn apply(key: &mut Map<String, Value>, limit: Option<&RateLimit>) {
    match limit {
        Some(limit) => key.insert("rate_limit".into(), limit.to_field()),
        None => key.remove("rate_limit"),
    };
}

/// `100/1m`, `10/1s burst 25` or `none`.
fn shown(limit: Option<&RateLimit>) -> String {
    limit.map_or_else(|| "none".to_string(), RateLimit::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_limit_is_set_replaced_and_removed() {
        let mut key = Map::new();
        key.insert("rate_limit".into(), json!("garbage"));
        let limit = RateLimit::parse("5/1s", Some(2)).unwrap();
        apply(&mut key, Some(&limit));
        assert_eq!(
            key["rate_limit"],
            json!({"requests": 5, "per": "1s", "burst": 2})
        );
        apply(&mut key, Some(&RateLimit::parse("100/1m", None).unwrap()));
        assert_eq!(key["rate_limit"], json!({"requests": 100, "per": "1m"}));
        apply(&mut key, None);
        assert!(!key.contains_key("rate_limit"));
        assert_eq!(shown(Some(&limit)), "5/1s burst 2");
        assert_eq!(shown(None), "none");
    }
}
