//! `uds-request SOCKET METHOD PATH [BODY]`: one HTTP request over a Unix socket, printing the
//! status code on the first line and the body on the second. The tests run it under another uid
//! (setpriv) to act as a non-admin peer; exit code 0 when the socket answered, 1 when it did not.

use heare_auth_tests::http::{Request, send};
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, method, path, rest @ ..] = args.as_slice() else {
        eprintln!("usage: uds-request SOCKET METHOD PATH [BODY]");
        return ExitCode::from(2);
    };
    let mut request = Request::new(method, path);
    if let Some(body) = rest.first() {
        request = request
            .header("Content-Type", "application/json")
            .body(body.as_bytes().to_vec());
    }
    match send(Path::new(socket), &request) {
        Ok(response) => {
            println!("{}\n{}", response.status, response.body);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("uds-request: {error}");
            ExitCode::FAILURE
        }
    }
}
