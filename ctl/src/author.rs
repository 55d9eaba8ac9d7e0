//! Who is writing, for the change log's record: the user heare-authctl runs as, the name the
//! session logged in as when it differs (the kernel's audit login uid, which survives `sudo` and
//! `su` and is not taken from the environment), the host's name, and with an S3 store on AWS the
//! principal of the credentials ([`heare_auth_store::sts`]). Names come from the user database;
//! a uid without a name is recorded as `uid N`.

use heare_auth_store::change::Author;
use nix::unistd::{Uid, User};

/// The author of a write made now by this process; `aws_principal` as STS named it, if it did.
pub fn current(aws_principal: Option<String>) -> Author {
    let user = name_of(Uid::current());
    let login = login_uid().map(name_of).filter(|login| *login != user);
    Author {
        user,
        login,
        host: host_name(),
        aws_principal,
    }
}

fn name_of(uid: Uid) -> String {
    match User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => format!("uid {uid}"),
    }
}

/// `/proc/self/loginuid`, unless unset (`4294967295`: no login session, e.g. a system service).
fn login_uid() -> Option<Uid> {
    let text = std::fs::read_to_string("/proc/self/loginuid").ok()?;
    let uid: u32 = text.trim().parse().ok()?;
    (uid != u32::MAX).then(|| Uid::from_raw(uid))
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}
