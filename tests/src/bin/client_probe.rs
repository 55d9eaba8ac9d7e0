//! `client-probe SOCKET SECRET`: verifies SECRET with heare-auth-client and prints the result's
//! Debug and Display forms. The tests run it as another user (setpriv) to see the client's
//! permission error as a real unprivileged process would.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, secret] = args.as_slice() else {
        eprintln!("usage: client-probe SOCKET SECRET");
        std::process::exit(2);
    };
    let client = heare_auth_client::Client::builder().socket(socket).build();
    match client.verify(secret) {
        Ok(key) => println!("Ok({key:?})"),
        Err(error) => println!("Err({error:?}) {error}"),
    }
}
