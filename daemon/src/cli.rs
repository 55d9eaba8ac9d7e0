//! The `heare-authd` command line. Every flag overrides the same setting of the configuration
//! file and of the environment (precedence: flags > environment > file > defaults).

use clap::Parser;
use std::path::PathBuf;

/// heare-authd: verifies API keys for local processes over a Unix socket.
///
/// Loads every key from one JSON object in S3 (or a local file), keeps them in memory and answers
/// POST /verify, POST /refresh, GET /health and GET /status over HTTP/1.1. Reloads on SIGHUP.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "heare-authd", version)]
pub struct Cli {
    /// Configuration file (TOML). Default: /etc/heare-auth/heare-authd.toml if it exists.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the keys live: s3://BUCKET/KEY or file:///ABSOLUTE/PATH.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Unix socket to listen on.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Permissions of the socket file, in octal (default 0660).
    #[arg(long, value_name = "OCTAL")]
    pub socket_mode: Option<String>,
    /// Group owning the socket file: its members may verify keys.
    #[arg(long, value_name = "NAME")]
    pub socket_group: Option<String>,
    /// Group whose members may call the admin endpoints (/refresh, /status) on the socket.
    #[arg(long, value_name = "NAME")]
    pub admin_group: Option<String>,
    /// Also listen on TCP (e.g. 127.0.0.1:8080), for HTTP clients of the Python service.
    #[arg(long, value_name = "ADDR")]
    pub listen_tcp: Option<String>,
    /// Last-known-good cache file, or "none".
    #[arg(long, value_name = "PATH")]
    pub cache: Option<String>,
    /// Poll the store for changes this often (seconds, or 30s/5m/1h); 0 turns polling off.
    #[arg(long, value_name = "SECS")]
    pub refresh_interval: Option<String>,
    /// Refuse to verify once the served set has gone unconfirmed by the store this long.
    #[arg(long, value_name = "DURATION")]
    pub max_stale: Option<String>,
    /// S3 endpoint override (MinIO, Ceph, Garage, a test server).
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Use path-style S3 addressing (endpoint/bucket/key).
    #[arg(long)]
    pub s3_path_style: bool,
    /// S3 region.
    #[arg(long, value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Log format: json (default), text, or journald (structured entries to the journal's socket).
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Log level or tracing filter (default info).
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Validate the configuration, print it, and exit.
    #[arg(long)]
    pub check_config: bool,
}
