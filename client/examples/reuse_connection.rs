//! One `Client`, many verifications over one kept-alive connection:
//! `cargo run -p heare-auth-client --example reuse_connection -- SOCKET SECRET [COUNT]`.

use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(socket), Some(secret)) = (args.next(), args.next()) else {
        return Err("usage: reuse_connection SOCKET SECRET [COUNT]".into());
    };
    let count: u32 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(1000);
    let client = heare_auth_client::Client::builder()
        .socket(socket)
        .timeout(Duration::from_secs(2))
        .user_agent("reuse-connection-example/1.0")
        .build();
    let started = Instant::now();
    for _ in 0..count {
        client.verify(&secret)?;
    }
    println!("{count} verifications in {:?}", started.elapsed());
    Ok(())
}
