//! Verify a key from the command line: `cargo run -p heare-auth-client --example verify -- SECRET`
//! (socket from `$HEARE_AUTH_SOCKET`, else /run/heare-auth/heare-authd.sock).

fn main() -> std::process::ExitCode {
    let Some(secret) = std::env::args().nth(1) else {
        eprintln!("usage: verify SECRET");
        return std::process::ExitCode::from(2);
    };
    match heare_auth_client::verify(&secret) {
        Ok(key) => {
            println!(
                "valid: {} ({}) metadata={}",
                key.key_id, key.name, key.metadata
            );
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            std::process::ExitCode::FAILURE
        }
    }
}
