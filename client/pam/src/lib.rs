//! `pam_heare_auth.so`: a PAM module that takes the password (PAM_AUTHTOK, prompting "API key: "
//! when no earlier module set it) as an API key and verifies it with heare-authd.
//!
//! Options (in the PAM service file): `socket=PATH` (default: the client's default socket),
//! `user_field=NAME` (the key's metadata field that must equal PAM_USER, so one user's key cannot
//! log in as another; without it any valid key authenticates as any user), `timeout=MS`
//! (default 3000). Results: PAM_SUCCESS for a valid key (and matching user), PAM_AUTH_ERR for an
//! invalid key or another user's key, PAM_AUTHINFO_UNAVAIL when the daemon cannot be asked,
//! PAM_USER_UNKNOWN when PAM has no user name. `pam_sm_setcred` returns PAM_SUCCESS. Outcomes go
//! to syslog (auth facility) with the key id, never the secret; the module's copies of the secret
//! are zeroed after use, and no panic crosses into the calling program.

use heare_auth_client::{Client, Error};
use pam::constants::{PAM_PROMPT_ECHO_OFF, PamFlag, PamResultCode};
use pam::conv::Conv;
use pam::items::AuthTok;
use pam::module::{PamHandle, PamHooks};
use std::ffi::{CStr, CString};
use std::time::Duration;

struct HeareAuth;
pam::pam_hooks!(HeareAuth);

/// The module's options.
#[derive(Debug, Default, PartialEq)]
struct Options {
    socket: Option<String>,
    user_field: Option<String>,
    timeout: Option<Duration>,
}

fn parse_options(args: &[&CStr]) -> Options {
    let mut options = Options::default();
    for arg in args {
        let Ok(arg) = arg.to_str() else { continue };
        match arg.split_once('=') {
            Some(("socket", path)) => options.socket = Some(path.to_string()),
            Some(("user_field", name)) => options.user_field = Some(name.to_string()),
            Some(("timeout", ms)) => options.timeout = ms.parse().ok().map(Duration::from_millis),
            _ => log(
                libc::LOG_WARNING,
                &format!("unknown option {arg:?} ignored"),
            ),
        }
    }
    options
}

fn log(priority: libc::c_int, message: &str) {
    let Ok(text) = CString::new(format!("pam_heare_auth: {message}")) else {
        return;
    };
    // SAFETY: a constant "%s" format with one NUL-terminated string argument.
    unsafe { libc::syslog(libc::LOG_AUTHPRIV | priority, c"%s".as_ptr(), text.as_ptr()) };
}

/// The decision, given the verification result: separated from PAM for testing.
fn decide(
    result: Result<heare_auth_client::Verified, Error>,
    user: &str,
    user_field: Option<&str>,
) -> PamResultCode {
    match result {
        Ok(key) => match user_field {
            None => {
                log(
                    libc::LOG_INFO,
                    &format!("user {user}: key {} accepted", key.key_id),
                );
                PamResultCode::PAM_SUCCESS
            }
            Some(field) => {
                if key.metadata.get(field).and_then(|v| v.as_str()) == Some(user) {
                    log(
                        libc::LOG_INFO,
                        &format!("user {user}: key {} accepted", key.key_id),
                    );
                    PamResultCode::PAM_SUCCESS
                } else {
                    log(
                        libc::LOG_NOTICE,
                        &format!(
                            "user {user}: key {} belongs to another user ({field})",
                            key.key_id
                        ),
                    );
                    PamResultCode::PAM_AUTH_ERR
                }
            }
        },
        Err(Error::InvalidKey | Error::MalformedKey(_)) => {
            log(libc::LOG_NOTICE, &format!("user {user}: invalid API key"));
            PamResultCode::PAM_AUTH_ERR
        }
        Err(error) => {
            log(
                libc::LOG_ERR,
                &format!("user {user}: cannot verify: {error}"),
            );
            PamResultCode::PAM_AUTHINFO_UNAVAIL
        }
    }
}

fn authenticate(pamh: &mut PamHandle, args: &[&CStr]) -> PamResultCode {
    let options = parse_options(args);
    let user = match pamh.get_user(None) {
        Ok(user) if !user.is_empty() => user,
        _ => return PamResultCode::PAM_USER_UNKNOWN,
    };
    let secret = match pamh.get_item::<AuthTok>() {
        Ok(Some(token)) if !token.as_bytes().is_empty() => token.to_owned_secret(),
        _ => {
            let conv = match pamh.get_item::<Conv>() {
                Ok(Some(conv)) => conv,
                _ => return PamResultCode::PAM_CONV_ERR,
            };
            match conv.send(PAM_PROMPT_ECHO_OFF, "API key: ") {
                Ok(Some(answer)) => answer,
                _ => return PamResultCode::PAM_CONV_ERR,
            }
        }
    };
    let Ok(secret_text) = secret.as_str() else {
        return PamResultCode::PAM_AUTH_ERR;
    };
    let mut builder = Client::builder()
        .timeout(options.timeout.unwrap_or(Duration::from_secs(3)))
        .user_agent(concat!("pam_heare_auth/", env!("CARGO_PKG_VERSION")));
    if let Some(socket) = &options.socket {
        builder = builder.socket(socket);
    }
    let result = builder
        .build()
        .verify(secret_text.trim_end_matches(['\n', '\r']));
    drop(secret); // SecretBytes zeroes itself
    decide(result, &user, options.user_field.as_deref())
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

    #[test]
    fn options_parse() {
        let args = [
            c"socket=/run/x.sock",
            c"user_field=unix_user",
            c"timeout=250",
            c"bogus",
        ];
        let options = parse_options(&args);
        assert_eq!(options.socket.as_deref(), Some("/run/x.sock"));
        assert_eq!(options.user_field.as_deref(), Some("unix_user"));
        assert_eq!(options.timeout, Some(Duration::from_millis(250)));
    }

    #[test]
    fn decisions() {
        let key = |user: &str| {
            Ok(heare_auth_client::Verified {
                key_id: "key_1".into(),
                name: "n".into(),
                metadata: serde_json::json!({ "unix_user": user }),
            })
        };
        assert_eq!(
            decide(key("alice"), "alice", Some("unix_user")),
            PamResultCode::PAM_SUCCESS
        );
        assert_eq!(
            decide(key("bob"), "alice", Some("unix_user")),
            PamResultCode::PAM_AUTH_ERR
        );
        assert_eq!(
            decide(key("bob"), "alice", None),
            PamResultCode::PAM_SUCCESS
        );
        assert_eq!(
            decide(Err(Error::InvalidKey), "alice", None),
            PamResultCode::PAM_AUTH_ERR
        );
        assert_eq!(
            decide(Err(Error::Timeout(Duration::from_secs(1))), "alice", None),
            PamResultCode::PAM_AUTHINFO_UNAVAIL
        );
    }
}
