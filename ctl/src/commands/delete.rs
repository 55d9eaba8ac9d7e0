//! `delete`: removes a key, after confirmation on a terminal (or `--yes`).

use crate::context::Context;
use crate::daemon_link;
use crate::error::CtlError;
use std::io::{BufRead, IsTerminal, Write};

pub async fn run(context: &Context, id: &str, yes: bool, no_reload: bool) -> Result<(), CtlError> {
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(CtlError::Usage(format!(
                "refusing to delete {id} without confirmation: stdin is not a terminal; pass --yes"
            )));
        }
        print!("Delete key {id}? Clients using it will be refused. [y/N] ");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(CtlError::Usage("not deleted".into()));
        }
    }
    context
        .edit(|document| {
            if document.remove(id) {
                Ok(())
            } else {
                Err(CtlError::NotFound(id.to_string()))
            }
        })
        .await?;
    println!("Deleted {id}");
    daemon_link::reload_after_write(context.socket(), no_reload);
    Ok(())
}
