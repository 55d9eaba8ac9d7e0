//! `delete`: removes a key, after confirmation on a terminal (or `--yes`).

use crate::context::Context;
use crate::daemon_link;
use crate::error::CtlError;

pub async fn run(context: &Context, id: &str, yes: bool, no_reload: bool) -> Result<(), CtlError> {
    super::confirm(
        yes,
        &format!("Delete key {id}? Clients using it will be refused."),
        &format!("refusing to delete {id} without confirmation"),
        "not deleted",
    )?;
    crate::commit::edit(context, "delete", |document| {
        if document.remove(id) {
            Ok(())
        } else {
            Err(CtlError::NotFound(id.to_string()))
        }
    })
    .await?;
    println!("Deleted {id}");
    daemon_link::reload_and_report(context.socket(), no_reload);
    Ok(())
}
