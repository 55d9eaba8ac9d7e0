//! Prints the heare-authd(8) manual page (troff) to stdout, for packaging:
//! `cargo run --example man_page -p heare-authd > heare-authd.8`.
//!
//! NAME, SYNOPSIS, DESCRIPTION and OPTIONS come from the clap definitions in
//! `heare_authd::cli`, so the flags cannot drift from the binary; the sections an operator needs
//! beyond the flags (configuration file, environment, signals, files, exit status) are written
//! here, next to nothing else, and kept short: README.md is the full reference.

use clap::CommandFactory;
use heare_authd::cli::Cli;
use std::io::Write;

const OPERATOR_SECTIONS: &str = r#".SH CONFIGURATION
The configuration file is TOML; every key is optional and an unknown key is an error.
The packaged
.I /etc/heare-auth/heare-authd.toml
lists every option, commented out, with its default.
Precedence: command-line flags, then the environment, then the file, then the defaults.
Check a configuration with
.BR "heare-authd \-\-check\-config" .
.SH ENVIRONMENT
.TP
.BR S3_BUCKET ", " S3_KEY ", " S3_REGION
The store as the Python heare-auth service names it: s3://$S3_BUCKET/$S3_KEY.
.TP
.B STORAGE_SECRET
Decrypts key files that start with HEARE_ENCRYPTED_V1: (Fernet).
Prefer storage_secret_file, or systemd's LoadCredential=storage_secret:PATH, which is read from
.BR $CREDENTIALS_DIRECTORY .
.TP
.BR AWS_ACCESS_KEY_ID ", " AWS_SECRET_ACCESS_KEY ", " AWS_ENDPOINT_URL ", " AWS_PROFILE
The standard AWS credential chain and endpoint override.
Under systemd, put them in
.I /etc/heare-auth/heare-authd.env
(root:heare-auth, mode 0640), which the unit reads as its EnvironmentFile.
.TP
.BR LISTEN_FDS ", " LISTEN_FDNAMES ", " NOTIFY_SOCKET ", " WATCHDOG_USEC ", " JOURNAL_STREAM
Set by systemd: socket activation, readiness and watchdog notification, logging to the journal.
Of the sockets passed, a TCP socket named metrics is the metrics listener, every other TCP socket
the verify TCP listener, every Unix socket the verify socket; each wins over listen_tcp or
metrics_listen. The packaged heare-authd-tcp.socket and heare-authd-metrics.socket (installed,
not enabled) pass them: root binds the ports and holds them across restarts, which a port the
daemon binds itself is not.
.SH SIGNALS
.TP
.B SIGHUP
Reload the keys from the store (the same as POST /refresh). A failed reload keeps the previous
keys and is logged and shown by GET /status.
.TP
.BR SIGTERM ", " SIGINT
Stop accepting connections, finish the requests in flight, remove the socket file and exit 0.
.SH FILES
.TP
.I /etc/heare-auth/heare-authd.toml
Configuration (root:heare-auth, 0640).
.TP
.I /run/heare-auth/heare-authd.sock
The socket. Members of its group (heare-auth-clients) may verify keys; root, the daemon's user and the
admin_group may also call /refresh and /status.
.TP
.I /var/lib/heare-auth/keys.json
The default key store (a file store, created empty if missing).
.TP
.I /var/lib/heare-auth/keys.cache
Last-known-good copy of an S3 key file, served (marked stale) when S3 cannot be read at start.
.SH EXIT STATUS
0 after a clean shutdown or a valid \-\-check\-config; 1 when the daemon cannot start or run (the
message says why; for example no store and no cache); 2 for a configuration or usage error.
.SH SEE ALSO
.BR heare-authctl (1),
.BR systemctl (1),
.BR systemd.socket (5)
"#;

fn main() -> std::io::Result<()> {
    let command = Cli::command();
    let man = clap_mangen::Man::new(command).section("8");
    let mut page = Vec::new();
    man.render(&mut page)?;
    page.extend_from_slice(OPERATOR_SECTIONS.as_bytes());
    std::io::stdout().write_all(&page)
}
