//! `pam_heare_auth.so`: a PAM module that takes an API key as the password and verifies it with
//! heare-authd.
//!
//! It fails closed. The options ([`options`]) are parsed strictly: an unknown or malformed one,
//! or neither `user_field=NAME` nor the explicit `any_user`, is PAM_SERVICE_ERR with a syslog line
//! naming the problem. It reads no environment variable (setuid programs such as `su` hand PAM
//! their caller's environment): the socket is `socket=` or the compiled-in default. Before
//! trusting an answer it checks who serves the socket (`SO_PEERCRED`): root, or the daemon's
//! system user (`server_user=`, default `heare-auth`, looked up with `getpwnam_r`; when that user
//! does not exist only root is trusted); anything else is PAM_AUTHINFO_UNAVAIL. The key is
//! prompted for ("API key: "); a token set by an earlier module is used only with
//! `use_first_pass` (never prompt) or `try_first_pass` (prompt if it is refused). Text that is not
//! shaped like a secret ([`heare_auth_client::token::is_secret_shaped`]) is refused locally and
//! never sent, so a Unix password typed at the wrong prompt never leaves the process.
//!
//! A uid-0 user is refused before any prompt unless the service file says `allow_root`: whoever
//! can add keys (the store's writers, the daemon's own user) would otherwise hold root.
//!
//! Results: PAM_SUCCESS for a valid key bound to the user, PAM_AUTH_ERR for anything else a user
//! typed, PAM_MAXTRIES for a key over its rate limit (the daemon answers 429: neither accepted
//! nor refused as invalid, and `try_first_pass` does not prompt again), PAM_AUTHINFO_UNAVAIL
//! when the daemon cannot be asked (or is not trusted, or does not answer within `timeout=`,
//! connecting included), PAM_USER_UNKNOWN without a user name, PAM_SERVICE_ERR for a bad service
//! file. `pam_sm_setcred` returns PAM_SUCCESS. Outcomes go to syslog (authpriv) with the key id,
//! never the secret; the module's copies of the secret are zeroed after use, and no panic crosses
//! into the calling program.

mod options;

use heare_auth_client::token::is_secret_shaped;
use heare_auth_client::{Client, Error, Verified};
use options::{Options, TokenSource, UserBinding};
use pam::constants::{PAM_PROMPT_ECHO_OFF, PamFlag, PamResultCode};
use pam::conv::Conv;
use pam::items::AuthTok;
use pam::module::{PamHandle, PamHooks};
use pam::secret::SecretBytes;
use std::ffi::{CStr, CString};

struct HeareAuth;
pam::pam_hooks!(HeareAuth);

/// Sends `pam_heare_auth: message` to syslog (authpriv), control characters replaced so that a
/// key id or a user name cannot forge a second line.
fn log(priority: libc::c_int, message: &str) {
    let clean: String = message
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let Ok(text) = CString::new(format!("pam_heare_auth: {clean}")) else {
        return;
    };
    // SAFETY: a constant "%s" format with one NUL-terminated string argument.
    unsafe { libc::syslog(libc::LOG_AUTHPRIV | priority, c"%s".as_ptr(), text.as_ptr()) };
}

/// The decision, given the verification result: separated from PAM for testing.
fn decide(result: Result<Verified, Error>, user: &str, binding: &UserBinding) -> PamResultCode {
    let key = match result {
        Ok(key) => key,
        Err(Error::InvalidKey | Error::MalformedKey(_)) => {
            log(libc::LOG_NOTICE, &format!("user {user}: invalid API key"));
            return PamResultCode::PAM_AUTH_ERR;
        }
        Err(Error::RateLimited {
            key_id,
            retry_after,
        }) => {
            log(
                libc::LOG_NOTICE,
                &format!(
                    "user {user}: key {key_id} is over its rate limit: refused for {} ms",
                    retry_after.as_millis()
                ),
            );
            return PamResultCode::PAM_MAXTRIES;
        }
        Err(error) => {
            log(
                libc::LOG_ERR,
                &format!("user {user}: cannot verify: {error}"),
            );
            return PamResultCode::PAM_AUTHINFO_UNAVAIL;
        }
    };
    if let UserBinding::Field(field) = binding
        && key.metadata.get(field).and_then(|v| v.as_str()) != Some(user)
    {
        log(
            libc::LOG_NOTICE,
            &format!(
                "user {user}: key {} belongs to another user ({field})",
                key.key_id
            ),
        );
        return PamResultCode::PAM_AUTH_ERR;
    }
    log(
        libc::LOG_INFO,
        &format!("user {user}: key {} accepted", key.key_id),
    );
    PamResultCode::PAM_SUCCESS
}

/// Refuses a uid-0 user (root, or any alias of uid 0) before any prompt unless `allow_root` is
/// set; `None` lets the check go on. A user database that cannot be asked fails closed.
fn refuse_root(user: &str) -> Option<PamResultCode> {
    match nix::unistd::User::from_name(user) {
        Ok(Some(found)) if found.uid.is_root() => {
            log(
                libc::LOG_NOTICE,
                &format!(
                    "user {user}: refused: uid 0 logs in with an API key only with allow_root"
                ),
            );
            Some(PamResultCode::PAM_AUTH_ERR)
        }
        Ok(_) => None,
        Err(errno) => {
            log(
                libc::LOG_ERR,
                &format!("user {user}: cannot look up the user ({errno}); refused"),
            );
            Some(PamResultCode::PAM_AUTHINFO_UNAVAIL)
        }
    }
}

/// The uids trusted to serve the socket: root, and `server_user` when it exists.
fn trusted_server_uids(server_user: &str) -> Vec<u32> {
    match nix::unistd::User::from_name(server_user) {
        Ok(Some(user)) => vec![0, user.uid.as_raw()],
        Ok(None) => {
            log(
                libc::LOG_NOTICE,
                &format!(
                    "server_user {server_user} does not exist: only a heare-authd running as root is trusted"
                ),
            );
            vec![0]
        }
        Err(errno) => {
            log(
                libc::LOG_ERR,
                &format!(
                    "cannot look up server_user {server_user} ({errno}): only a heare-authd running as root is trusted"
                ),
            );
            vec![0]
        }
    }
}

/// Checks tokens for one user with one client.
struct Checker<'a> {
    client: Client,
    user: &'a str,
    binding: &'a UserBinding,
}

impl<'a> Checker<'a> {
    fn new(options: &'a Options, user: &'a str) -> Self {
        let client = Client::builder()
            .socket(&options.socket)
            .timeout(options.timeout)
            .server_uids(trusted_server_uids(&options.server_user))
            .user_agent(concat!("pam_heare_auth/", env!("CARGO_PKG_VERSION")))
            .build();
        Checker {
            client,
            user,
            binding: &options.binding,
        }
    }

    /// Verifies `token` if it is shaped like a secret; refuses it locally otherwise.
    fn check(&self, token: &SecretBytes, origin: &str) -> PamResultCode {
        let user = self.user;
        let shaped = token
            .as_str()
            .ok()
            .map(|text| text.trim_end_matches(['\n', '\r']))
            .filter(|text| is_secret_shaped(text));
        let Some(secret) = shaped else {
            log(
                libc::LOG_NOTICE,
                &format!(
                    "user {user}: {origin} is not shaped like an API key: refused without asking heare-authd"
                ),
            );
            return PamResultCode::PAM_AUTH_ERR;
        };
        decide(self.client.verify(secret), user, self.binding)
    }
}

/// The token an earlier module stored (PAM_AUTHTOK), if any.
fn earlier_token(pamh: &PamHandle) -> Option<SecretBytes> {
    match pamh.get_item::<AuthTok>() {
        Ok(Some(token)) if !token.as_bytes().is_empty() => Some(token.to_owned_secret()),
        _ => None,
    }
}

/// Prompts "API key: " (echo off) and checks the answer.
fn prompt_and_check(pamh: &PamHandle, checker: &Checker<'_>) -> PamResultCode {
    let conv = match pamh.get_item::<Conv>() {
        Ok(Some(conv)) => conv,
        _ => return PamResultCode::PAM_CONV_ERR,
    };
    match conv.send(PAM_PROMPT_ECHO_OFF, "API key: ") {
        Ok(Some(answer)) => checker.check(&answer, "the typed key"),
        _ => PamResultCode::PAM_CONV_ERR,
    }
}

/// The token to check, by the service file's `use_first_pass` / `try_first_pass` / neither.
fn check_by_source(pamh: &PamHandle, checker: &Checker<'_>, source: TokenSource) -> PamResultCode {
    const EARLIER: &str = "the earlier module's token";
    match source {
        TokenSource::Prompt => prompt_and_check(pamh, checker),
        TokenSource::UseFirstPass => match earlier_token(pamh) {
            Some(token) => checker.check(&token, EARLIER),
            None => {
                let user = checker.user;
                log(
                    libc::LOG_NOTICE,
                    &format!("user {user}: use_first_pass, but no earlier module set a token"),
                );
                PamResultCode::PAM_AUTH_ERR
            }
        },
        TokenSource::TryFirstPass => {
            if let Some(token) = earlier_token(pamh) {
                let result = checker.check(&token, EARLIER);
                if result != PamResultCode::PAM_AUTH_ERR {
                    return result;
                }
            }
            prompt_and_check(pamh, checker)
        }
    }
}

fn authenticate(pamh: &mut PamHandle, args: &[&CStr]) -> PamResultCode {
    let options = match options::parse(args) {
        Ok(options) => options,
        Err(error) => {
            log(
                libc::LOG_ERR,
                &format!("{error}: refusing every user until the PAM service file is fixed"),
            );
            return PamResultCode::PAM_SERVICE_ERR;
        }
    };
    let user = match pamh.get_user(None) {
        Ok(user) if !user.is_empty() => user,
        _ => return PamResultCode::PAM_USER_UNKNOWN,
    };
    if !options.allow_root
        && let Some(refusal) = refuse_root(&user)
    {
        return refusal;
    }
    let checker = Checker::new(&options, &user);
    check_by_source(pamh, &checker, options.token_source)
}

impl PamHooks for HeareAuth {
    fn sm_authenticate(pamh: &mut PamHandle, args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| authenticate(pamh, &args)))
            .unwrap_or(PamResultCode::PAM_AUTHINFO_UNAVAIL)
    }

    fn sm_setcred(_pamh: &mut PamHandle, _args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        PamResultCode::PAM_SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn decisions() {
        let key = |user: &str| {
            Ok(Verified {
                key_id: "key_1".into(),
                name: "n".into(),
                metadata: serde_json::json!({ "unix_user": user }),
            })
        };
        let field = UserBinding::Field("unix_user".into());
        assert_eq!(
            decide(key("alice"), "alice", &field),
            PamResultCode::PAM_SUCCESS
        );
        assert_eq!(
            decide(key("bob"), "alice", &field),
            PamResultCode::PAM_AUTH_ERR
        );
        assert_eq!(
            decide(key("bob"), "alice", &UserBinding::AnyUser),
            PamResultCode::PAM_SUCCESS
        );
        assert_eq!(
            decide(Err(Error::InvalidKey), "alice", &field),
            PamResultCode::PAM_AUTH_ERR
        );
        assert_eq!(
            decide(Err(Error::Timeout(Duration::from_secs(1))), "alice", &field),
            PamResultCode::PAM_AUTHINFO_UNAVAIL
        );
        let limited = || {
            Err(Error::RateLimited {
                key_id: "key_1".into(),
                retry_after: Duration::from_secs(30),
            })
        };
        assert_eq!(
            decide(limited(), "alice", &field),
            PamResultCode::PAM_MAXTRIES
        );
        assert_eq!(
            decide(limited(), "alice", &UserBinding::AnyUser),
            PamResultCode::PAM_MAXTRIES
        );
        assert_eq!(PamResultCode::PAM_MAXTRIES as i32, 11);
        let untrusted = Error::UntrustedServer {
            endpoint: "/x.sock".into(),
            uid: Some(65534),
        };
        assert_eq!(
            decide(Err(untrusted), "alice", &UserBinding::AnyUser),
            PamResultCode::PAM_AUTHINFO_UNAVAIL
        );
    }

    #[test]
    fn a_missing_server_user_trusts_only_root() {
        assert_eq!(trusted_server_uids("no-such-user-heare-test"), vec![0]);
        assert_eq!(trusted_server_uids("root"), vec![0, 0]);
    }
}
