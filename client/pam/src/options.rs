//! The module's options, as written after `pam_heare_auth.so` in a PAM service file, parsed
//! strictly. An unknown, malformed, repeated or conflicting option is an error, and so is a
//! service file that says neither `user_field=` nor `any_user`: the module then fails closed
//! (PAM_SERVICE_ERR), because an option silently ignored — `user_feild=unix_user` — would turn a
//! protection off without anyone noticing. Nothing here reads the environment: the socket is
//! `socket=` or the compiled-in default.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Timeout of one verification when `timeout=` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// The daemon's system user, trusted (with root) to serve the socket, when `server_user=` is
/// not given.
pub const DEFAULT_SERVER_USER: &str = "heare-auth";
/// Largest `timeout=` accepted, in milliseconds (10 minutes).
const MAX_TIMEOUT_MS: u64 = 600_000;

/// Which PAM users a valid key may authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserBinding {
    /// Only the user named by this metadata field of the key (`user_field=NAME`).
    Field(String),
    /// Any user (`any_user`, the administrator's explicit opt-in).
    AnyUser,
}

/// Where the key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// Always prompt "API key: ", ignoring a token an earlier module set (the default).
    Prompt,
    /// `try_first_pass`: the earlier module's token if it is shaped like a key and accepted,
    /// else prompt (as pam_unix).
    TryFirstPass,
    /// `use_first_pass`: only the earlier module's token; never prompt.
    UseFirstPass,
}

/// The parsed options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub socket: PathBuf,
    pub binding: UserBinding,
    pub timeout: Duration,
    pub server_user: String,
    pub token_source: TokenSource,
    /// `allow_root`: a key may log in as a uid-0 user (off by default: whoever can add keys —
    /// the store's writers, the daemon's user — would otherwise hold root).
    pub allow_root: bool,
}

/// Why the options cannot be used; the text names the option, for the syslog line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("unknown option {0:?}")]
    Unknown(String),
    #[error("malformed option {option:?}: {why}")]
    Malformed { option: String, why: &'static str },
    #[error("option {0:?} is given twice")]
    Repeated(String),
    #[error("options {0} and {1} exclude each other")]
    Conflict(&'static str, &'static str),
    #[error(
        "neither user_field=NAME nor any_user is given, so every user is refused (any_user lets any valid key log in as any user)"
    )]
    NoUserBinding,
}

/// The options as they are read, before the checks that need all of them.
#[derive(Default)]
struct Draft {
    socket: Option<PathBuf>,
    user_field: Option<String>,
    any_user: bool,
    timeout: Option<Duration>,
    server_user: Option<String>,
    use_first_pass: bool,
    try_first_pass: bool,
    allow_root: bool,
}

/// Parses the module's arguments.
pub fn parse(args: &[&CStr]) -> Result<Options, OptionError> {
    let mut draft = Draft::default();
    let mut seen: Vec<String> = Vec::new();
    for arg in args {
        let Ok(text) = arg.to_str() else {
            return Err(OptionError::Malformed {
                option: arg.to_string_lossy().into_owned(),
                why: "not UTF-8",
            });
        };
        let (name, value) = match text.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (text, None),
        };
        if seen.iter().any(|n| n == name) {
            return Err(OptionError::Repeated(name.to_string()));
        }
        seen.push(name.to_string());
        draft.set(name, value, text)?;
    }
    draft.finish()
}

fn malformed(option: &str, why: &'static str) -> OptionError {
    OptionError::Malformed {
        option: option.to_string(),
        why,
    }
}

impl Draft {
    fn set(&mut self, name: &str, value: Option<&str>, text: &str) -> Result<(), OptionError> {
        match (name, value) {
            ("socket", Some(path)) if Path::new(path).is_absolute() => {
                self.socket = Some(PathBuf::from(path));
            }
            ("socket", Some(_)) => return Err(malformed(text, "not an absolute path")),
            ("user_field", Some(field)) if !field.is_empty() => {
                self.user_field = Some(field.to_string());
            }
            ("server_user", Some(user)) if !user.is_empty() => {
                self.server_user = Some(user.to_string());
            }
            ("timeout", Some(ms)) => self.timeout = Some(milliseconds(ms, text)?),
            ("user_field" | "server_user" | "timeout", _) => {
                return Err(malformed(text, "needs a value"));
            }
            ("any_user", None) => self.any_user = true,
            ("use_first_pass", None) => self.use_first_pass = true,
            ("try_first_pass", None) => self.try_first_pass = true,
            ("allow_root", None) => self.allow_root = true,
            ("any_user" | "use_first_pass" | "try_first_pass" | "allow_root", Some(_)) => {
                return Err(malformed(text, "takes no value"));
            }
            _ => return Err(OptionError::Unknown(text.to_string())),
        }
        Ok(())
    }

    fn finish(self) -> Result<Options, OptionError> {
        let binding = match (self.user_field, self.any_user) {
            (Some(_), true) => return Err(OptionError::Conflict("user_field=", "any_user")),
            (Some(field), false) => UserBinding::Field(field),
            (None, true) => UserBinding::AnyUser,
            (None, false) => return Err(OptionError::NoUserBinding),
        };
        let token_source = match (self.use_first_pass, self.try_first_pass) {
            (true, true) => return Err(OptionError::Conflict("use_first_pass", "try_first_pass")),
            (true, false) => TokenSource::UseFirstPass,
            (false, true) => TokenSource::TryFirstPass,
            (false, false) => TokenSource::Prompt,
        };
        Ok(Options {
            socket: self
                .socket
                .unwrap_or_else(|| PathBuf::from(heare_auth_client::DEFAULT_SOCKET_PATH)),
            binding,
            timeout: self.timeout.unwrap_or(DEFAULT_TIMEOUT),
            server_user: self
                .server_user
                .unwrap_or_else(|| DEFAULT_SERVER_USER.to_string()),
            token_source,
            allow_root: self.allow_root,
        })
    }
}

/// A timeout in milliseconds, 1 to [`MAX_TIMEOUT_MS`].
fn milliseconds(ms: &str, text: &str) -> Result<Duration, OptionError> {
    match ms.parse::<u64>() {
        Ok(ms) if (1..=MAX_TIMEOUT_MS).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(malformed(
            text,
            "not a number of milliseconds from 1 to 600000",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(args: &[&str]) -> Result<Options, OptionError> {
        let owned: Vec<std::ffi::CString> = args
            .iter()
            .map(|a| std::ffi::CString::new(*a).unwrap())
            .collect();
        let borrowed: Vec<&CStr> = owned.iter().map(|c| c.as_c_str()).collect();
        parse(&borrowed)
    }

    #[test]
    fn all_options_parse() {
        let options = parse_text(&[
            "socket=/run/x.sock",
            "user_field=unix_user",
            "timeout=250",
            "server_user=authd",
            "try_first_pass",
        ])
        .unwrap();
        assert_eq!(options.socket, PathBuf::from("/run/x.sock"));
        assert_eq!(options.binding, UserBinding::Field("unix_user".into()));
        assert_eq!(options.timeout, Duration::from_millis(250));
        assert_eq!(options.server_user, "authd");
        assert_eq!(options.token_source, TokenSource::TryFirstPass);
    }

    #[test]
    fn defaults_never_come_from_the_environment() {
        let options = parse_text(&["any_user"]).unwrap();
        assert_eq!(
            options.socket,
            PathBuf::from(heare_auth_client::DEFAULT_SOCKET_PATH)
        );
        assert_eq!(options.binding, UserBinding::AnyUser);
        assert_eq!(options.timeout, DEFAULT_TIMEOUT);
        assert_eq!(options.server_user, DEFAULT_SERVER_USER);
        assert_eq!(options.token_source, TokenSource::Prompt);
        assert_eq!(
            parse_text(&["any_user", "use_first_pass"])
                .unwrap()
                .token_source,
            TokenSource::UseFirstPass
        );
    }

    #[test]
    fn anything_unexpected_is_an_error_naming_the_option() {
        let cases: &[(&[&str], &str)] = &[
            (&["user_feild=unix_user"], "user_feild=unix_user"),
            (&["any_user", "debug"], "debug"),
            (&["any_user", "timeout=abc"], "timeout=abc"),
            (&["any_user", "timeout=0"], "timeout=0"),
            (&["any_user", "timeout=600001"], "timeout=600001"),
            (
                &["any_user", "socket=relative.sock"],
                "socket=relative.sock",
            ),
            (&["any_user", "socket="], "socket="),
            (&["user_field="], "user_field="),
            (&["user_field"], "user_field"),
            (&["any_user=yes"], "any_user=yes"),
            (&["any_user", "server_user="], "server_user="),
            (&["user_field=a", "user_field=b"], "user_field"),
            (&["user_field=a", "any_user"], "any_user"),
            (
                &["any_user", "use_first_pass", "try_first_pass"],
                "try_first_pass",
            ),
        ];
        for (args, named) in cases {
            let error = parse_text(args).unwrap_err();
            assert!(error.to_string().contains(named), "{args:?}: {error}");
        }
    }

    #[test]
    fn without_a_user_binding_every_user_is_refused() {
        assert_eq!(parse_text(&[]), Err(OptionError::NoUserBinding));
        assert_eq!(
            parse_text(&["socket=/run/x.sock"]),
            Err(OptionError::NoUserBinding)
        );
        assert!(OptionError::NoUserBinding.to_string().contains("any_user"));
    }
}
