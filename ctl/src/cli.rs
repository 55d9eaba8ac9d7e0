//! The `heare-authctl` command line (clap). `--store`, `--socket` and `--config` mean what they
//! mean for heare-authd and default to the same configuration file.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// heare-authctl: manage the API keys in the heare-auth store and reload the local daemon.
///
/// Exit codes: 0 ok, 1 error, 2 usage, 3 key not found, 4 conflict (the store kept changing).
#[derive(Debug, Parser)]
#[command(name = "heare-authctl", version)]
pub struct Cli {
    /// heare-authd configuration file (default /etc/heare-auth/heare-authd.toml if it exists).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The key store: s3://BUCKET/KEY or file:///ABSOLUTE/PATH.
    #[arg(long, global = true, value_name = "URL")]
    pub store: Option<String>,
    /// The daemon's Unix socket (to reload it and read its status).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Write even when the store holds an older key file than the local heare-authd serves (or
    /// one with a generation in the future): for a backup restored on purpose. Without it such a
    /// write is refused, since it would make an old copy written back by someone else current.
    #[arg(long, global = true)]
    pub accept_older: bool,
    /// How long a write to a file store waits for the key file's lock (`<key file>.lock`) held
    /// by another process, before failing with nothing written (e.g. 30s, 500ms; 0 tries once).
    #[arg(long, global = true, default_value = "30s", value_name = "DURATION")]
    pub lock_timeout: String,
    /// Why: recorded with a write in the store's change log (`heare-authctl log`), one line of
    /// at most 500 characters.
    #[arg(long, global = true, value_name = "TEXT")]
    pub reason: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a key; prints its secret once.
    Create(CreateArgs),
    /// List keys (never secrets or hashes).
    List {
        /// Also show metadata and when each key was last changed.
        #[arg(long)]
        detailed: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show one key.
    Show {
        key_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a key (asks on a terminal; needs --yes otherwise).
    Delete {
        key_id: String,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Give a key a new secret; the old one keeps working for the grace period.
    Rotate {
        key_id: String,
        /// How long the old secret keeps verifying (never past the key's own expiry).
        #[arg(long, default_value = "24h", value_name = "DURATION")]
        grace: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Add or remove scopes of a key.
    Scopes {
        key_id: String,
        /// A scope to add (repeatable).
        #[arg(long, value_name = "SCOPE")]
        add: Vec<String>,
        /// A scope to remove (repeatable).
        #[arg(long, value_name = "SCOPE")]
        remove: Vec<String>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Set or remove a key's rate limit: at most REQUESTS verifications every PERIOD.
    RateLimit {
        key_id: String,
        /// REQUESTS/PERIOD (e.g. 100/1m, 10/1s, 5000/1h; periods 1ms to 366d), or `none` to
        /// remove the key's limit.
        #[arg(value_name = "LIMIT")]
        limit: String,
        /// How many of the requests may come at once (default: REQUESTS).
        #[arg(long, value_name = "N")]
        burst: Option<u64>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Set when a key expires, or expire it now.
    Expire {
        key_id: String,
        /// ISO 8601 time.
        #[arg(
            long,
            value_name = "TIME",
            conflicts_with = "now",
            required_unless_present = "now"
        )]
        at: Option<String>,
        #[arg(long)]
        now: bool,
        /// Accept a time in the past.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Disable a key: it stays listed but does not verify.
    Disable {
        key_id: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Enable a disabled key.
    Enable {
        key_id: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Import a key file in the Python service's format, storing only hashes of its secrets.
    Import {
        file: PathBuf,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Rewrite the store: no plaintext secret left (--hash-secrets), or a plain file encrypted
    /// under the configured storage secret (--encrypt); both may be given.
    #[command(group(clap::ArgGroup::new("migration").required(true).multiple(true)))]
    Migrate {
        /// Replace every plaintext `secret` with its `secret_hash`.
        #[arg(long, group = "migration")]
        hash_secrets: bool,
        /// Encrypt a plain key file with the configured storage secret (STORAGE_SECRET,
        /// storage_secret_file or the systemd credential): once a secret is configured, the
        /// daemon and every other command refuse a plain file. Read the file first: whoever
        /// could write the store may have added keys.
        #[arg(long, group = "migration")]
        encrypt: bool,
        /// With --encrypt: do not ask for confirmation of the keys listed.
        #[arg(long, short)]
        yes: bool,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// The store's change log: every write, oldest first, with author and reason (never a secret).
    Log {
        /// Only changes made since TIME (ISO 8601) or for DURATION back (24h, 7d).
        #[arg(long, value_name = "TIME", conflicts_with = "from")]
        since: Option<String>,
        /// Only changes numbered N and later.
        #[arg(long, value_name = "N")]
        from: Option<u64>,
        /// Only changes of this key.
        #[arg(long, value_name = "ID")]
        key: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Delete change objects the key object already contains (--keep), or an invalid one that
    /// stops writers (--drop-invalid).
    Compact {
        /// Keep changes younger than DURATION (e.g. 90d); older ones the key object contains go.
        #[arg(long, value_name = "DURATION", conflicts_with = "drop_invalid")]
        keep: Option<String>,
        /// Delete change N, beyond the key object, if it is invalid (asks on a terminal).
        #[arg(long, value_name = "N")]
        drop_invalid: Option<u64>,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
    /// Ask the local daemon to reload its keys.
    Reload {
        /// Send SIGHUP to the daemon (systemd's MainPID, or --pid) instead of POST /refresh.
        #[arg(long)]
        signal: bool,
        /// The daemon's pid, for --signal without systemd.
        #[arg(long, requires = "signal")]
        pid: Option<i32>,
    },
    /// Show the daemon's status.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Keys with their verifications and last use, on this host (the daemon's GET /usage) or
    /// over the fleet (--fleet: every host's report under usage_report).
    Usage {
        /// Only keys not verified for this long (or never), and created before that.
        #[arg(long, value_name = "DURATION")]
        unused_for: Option<String>,
        #[arg(long)]
        json: bool,
        /// Read and merge every host's report under usage_report (s3://BUCKET/PREFIX/).
        #[arg(long)]
        fleet: bool,
        /// Each host's figures too (with --fleet, memory then grows with hosts × keys).
        #[arg(long)]
        detailed: bool,
        /// With --fleet: the most report bytes read in all (e.g. 1GiB, 64MiB, or bytes); past it
        /// nothing is shown and the command fails.
        #[arg(long, default_value = "1GiB", value_name = "SIZE")]
        max_bytes: String,
    },
    /// Print shell completions.
    GenCompletions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    GenMan,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A name for the key (required, up to 200 characters).
    #[arg(long)]
    pub name: String,
    /// Metadata as a JSON object.
    #[arg(long, value_name = "JSON", conflicts_with = "meta")]
    pub metadata: Option<String>,
    /// One metadata entry, KEY=VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// When the key expires (ISO 8601).
    #[arg(long, value_name = "TIME", conflicts_with = "expires_in")]
    pub expires_at: Option<String>,
    /// Expires after this long (e.g. 90d, 12h).
    #[arg(long, value_name = "DURATION")]
    pub expires_in: Option<String>,
    /// A scope the key holds (repeatable): what `/auth?scope=` and `require_scopes` ask for.
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// A rate limit for the key: at most REQUESTS verifications every PERIOD, as REQUESTS/PERIOD
    /// (e.g. 100/1m, 10/1s, 5000/1h; periods 1ms to 366d).
    #[arg(long, value_name = "LIMIT")]
    pub rate_limit: Option<String>,
    /// With --rate-limit: how many of the requests may come at once (default: REQUESTS).
    #[arg(long, value_name = "N", requires = "rate_limit")]
    pub burst: Option<u64>,
    /// Accept an expiry in the past.
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub write: WriteArgs,
}

/// Options of every command that writes the store.
#[derive(Debug, Args)]
pub struct WriteArgs {
    /// Do not ask the daemon to reload after the write.
    #[arg(long)]
    pub no_reload: bool,
}
