//! Verify a key from async code: `cargo run -p heare-auth-client --features async --example
//! verify_async -- SECRET`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let Some(secret) = std::env::args().nth(1) else {
        eprintln!("usage: verify_async SECRET");
        return std::process::ExitCode::from(2);
    };
    let client = heare_auth_client::AsyncClient::default_socket();
    match client.verify(&secret).await {
        Ok(key) => {
            println!("valid: {} ({})", key.key_id, key.name);
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            std::process::ExitCode::FAILURE
        }
    }
}
