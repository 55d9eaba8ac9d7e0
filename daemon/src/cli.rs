//! The `heare-authd` command line. Every flag overrides the same setting of the configuration
//! file and of the environment (precedence: flags > environment > file > defaults). The Python
//! service's environment variables (`S3_BUCKET`, `S3_KEY`, `S3_REGION`) are read by clap for their
//! flags; the storage secret has no flag (a command line is visible to every local user) and is
//! read by `config`.

use clap::Parser;
use std::path::PathBuf;

/// heare-authd: verifies API keys for local processes over a Unix socket.
///
/// Loads every key from one JSON object in S3 (or a local file), keeps them in memory and answers
/// POST /verify, POST /refresh, GET /health, GET /status and GET /metrics over HTTP/1.1. Reloads on SIGHUP.
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
    /// Also listen on TCP (e.g. 127.0.0.1:8080), for HTTP clients of the Python service. Under
    /// systemd enable heare-authd-tcp.socket instead: root binds it and holds it across restarts.
    /// A taken address does not stop the start; it is retried until free.
    #[arg(long, value_name = "ADDR")]
    pub listen_tcp: Option<String>,
    /// A TCP listener (e.g. 127.0.0.1:9464) that serves only GET /metrics, to anyone who can
    /// connect, and GET /health: for Prometheus, which cannot scrape a Unix socket. Off by default.
    /// Under systemd enable heare-authd-metrics.socket instead.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Last-known-good cache file, or "none".
    #[arg(long, value_name = "PATH")]
    pub cache: Option<String>,
    /// Per-key usage state file, or "none" (default usage.json beside the cache, else beside a
    /// local key file).
    #[arg(long, value_name = "PATH")]
    pub usage_path: Option<String>,
    /// Poll the store for changes this often (seconds, or 30s/5m/1h); 0 turns polling off.
    #[arg(long, value_name = "SECS")]
    pub refresh_interval: Option<String>,
    /// Spread each poll wait uniformly over the interval ± this (default 10%; "0%" to 50%).
    #[arg(long, value_name = "PERCENT")]
    pub refresh_jitter: Option<String>,
    /// SQS queue receiving the store object's S3 event notifications (directly or through SNS):
    /// each one reloads at once; polling stays as the fallback (every 300 s unless set).
    #[arg(long, value_name = "URL")]
    pub notify_queue: Option<String>,
    /// Watch a file store: reload within about a second of any change to the key file (default
    /// true; ignored for S3 stores).
    #[arg(long, value_name = "BOOL")]
    pub watch_store: Option<bool>,
    /// Refuse to verify once the served set has gone unconfirmed by the store this long.
    #[arg(long, value_name = "DURATION")]
    pub max_stale: Option<String>,
    /// S3 endpoint override (MinIO, Ceph, Garage, a test server).
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Use path-style S3 addressing (endpoint/bucket/key).
    #[arg(long)]
    pub s3_path_style: bool,
    /// S3 region (or S3_REGION, as for the Python service).
    #[arg(long, value_name = "REGION", env = "S3_REGION", hide_env_values = true)]
    pub s3_region: Option<String>,
    /// The Python service's bucket: with --s3-key (default keys.json), the store
    /// s3://BUCKET/KEY when --store is not given.
    #[arg(long, value_name = "BUCKET", env = "S3_BUCKET", hide_env_values = true)]
    pub s3_bucket: Option<String>,
    /// The Python service's object key in --s3-bucket (default keys.json).
    #[arg(long, value_name = "KEY", env = "S3_KEY", hide_env_values = true)]
    pub s3_key: Option<String>,
    /// Bound on one S3 call, retries included (default 10s).
    #[arg(long, value_name = "DURATION")]
    pub s3_timeout: Option<String>,
    /// Allow admin calls (/refresh, /status) on TCP from loopback peers.
    #[arg(long)]
    pub tcp_admin_from_loopback: bool,
    /// Concurrent connections (default 1024, capped to the descriptor limit).
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Connections one uid may hold on the Unix socket (default a quarter of max_connections).
    #[arg(long, value_name = "N")]
    pub max_connections_per_uid: Option<usize>,
    /// Connections one TCP address (IPv6: one /64) may hold (default a quarter of max_connections).
    #[arg(long, value_name = "N")]
    pub max_connections_per_address: Option<usize>,
    /// Threads serving requests (default one per CPU).
    #[arg(long, value_name = "N")]
    pub worker_threads: Option<usize>,
    /// A request's headers must arrive within this (default 10s; 0 disables).
    #[arg(long, value_name = "DURATION")]
    pub header_read_timeout: Option<String>,
    /// A connection with no new request for this long is closed (default 60s; 0 disables).
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// A connection whose answer makes no write progress for this long is closed (default 10s;
    /// 0 disables).
    #[arg(long, value_name = "DURATION")]
    pub write_timeout: Option<String>,
    /// Larger key files are refused (bytes, default 1073741824).
    #[arg(long, value_name = "BYTES")]
    pub max_store_bytes: Option<u64>,
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
