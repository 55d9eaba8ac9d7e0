//! `peak-rss REPORT PROGRAM [ARG...]`: runs PROGRAM with this process's standard streams and
//! environment, waits for it, and writes `<wait status> <peak resident KiB>` to REPORT; exit code
//! 0 when it did, 1 otherwise.
//!
//! The peak is the `ru_maxrss` that `wait4` gives for the child. Linux starts that count from the
//! process that spawned it: at exec, the peak of the address space left behind is kept. Spawned
//! straight from a test process that holds a 35 MB report (or an in-process S3 server), a program
//! reports the test's peak whenever its own is lower; spawned from this small process, its own.
//! It uses nothing but std and libc, to stay small.

use std::ffi::OsString;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let [report, program, rest @ ..] = args.as_slice() else {
        eprintln!("usage: peak-rss REPORT PROGRAM [ARG...]");
        return ExitCode::from(2);
    };
    // Reaped by wait4 below, with its rusage.
    let child = match Command::new(program).args(rest).spawn() {
        Ok(child) => child,
        Err(error) => {
            eprintln!(
                "peak-rss: cannot run {}: {error}",
                program.to_string_lossy()
            );
            return ExitCode::FAILURE;
        }
    };
    let measured = wait4(child.id())
        .and_then(|(status, peak)| std::fs::write(report, format!("{status} {peak}\n")));
    match measured {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("peak-rss: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for child `pid`, reaping it: its wait status and its peak resident memory in KiB.
fn wait4(pid: u32) -> std::io::Result<(libc::c_int, libc::c_long)> {
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live locals of the right types.
        let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if waited == pid {
            return Ok((status, usage.ru_maxrss));
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}
