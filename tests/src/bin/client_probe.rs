//! `client-probe SOCKET SECRET`: verifies SECRET with heare-auth-client and prints the result's
//! Debug and Display forms. The tests run it as another user (setpriv) to see the client's
//! permission error as a real unprivileged process would.
//!
//! `client-probe --default SECRET` uses the client's default socket instead, and first prints
//! `socket=PATH euid=N uid=N`: a setuid copy of it shows that a privileged process ignores
//! `$HEARE_AUTH_SOCKET`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, secret] = args.as_slice() else {
        eprintln!("usage: client-probe SOCKET|--default SECRET");
        std::process::exit(2);
    };
    let builder = heare_auth_client::Client::builder();
    let client = if socket == "--default" {
        println!(
            "socket={} euid={} uid={}",
            heare_auth_client::default_socket_path().display(),
            nix::unistd::geteuid(),
            nix::unistd::getuid()
        );
        builder.build()
    } else {
        builder.socket(socket).build()
    };
    match client.verify(secret) {
        Ok(key) => println!("Ok({key:?})"),
        Err(error) => println!("Err({error:?}) {error}"),
    }
}
