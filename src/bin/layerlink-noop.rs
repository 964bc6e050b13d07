//! `layerlink-noop`: the static no-op that pre-pull init containers run from a base image
//! (docs/design.md, *Pre-pull runs no code of the base*), so no code of the base ever runs.
//!
//! - no arguments: exit 0.
//! - `--copy-to PATH`: copy this executable to PATH, mode 0555 (the `layerlink-tools` init
//!   container fills the shared emptyDir this way; the base image may have no shell or `cp`).
//! - `--sleep`: sleep until SIGTERM or SIGINT, then exit 0 (the pre-puller DaemonSet's
//!   pause-like container).
//!
//! Plain std, no dependencies; built with `-C target-feature=+crt-static`, so it needs no libc
//! or loader in the image it runs from.

use std::{env, ffi::OsString, fs, os::unix::fs::PermissionsExt, path::PathBuf, process::ExitCode, time::Duration};

const USAGE: &str = "usage: layerlink-noop [--copy-to PATH | --sleep]";

fn main() -> ExitCode {
    let args: Vec<OsString> = env::args_os().collect();
    let rest: Vec<&str> = args.iter().skip(1).map(|a| a.to_str().unwrap_or("")).collect();
    match rest.as_slice() {
        [] => ExitCode::SUCCESS,
        ["--copy-to", _] => match copy_self(&args[0], PathBuf::from(&args[2])) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("layerlink-noop: --copy-to {}: {e}", args[2].to_string_lossy());
                ExitCode::FAILURE
            }
        },
        ["--sleep"] => sleep_until_signalled(),
        ["--help" | "-h"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Copies our own executable to `to` through a temporary file and a rename, so a restarted init
/// container can replace an earlier (read-only) copy and a reader never sees half a file.
fn copy_self(argv0: &OsString, to: PathBuf) -> std::io::Result<()> {
    // /proc/self/exe, or argv[0] where /proc is not mounted (an empty chroot).
    let me = env::current_exe().or_else(|_| fs::canonicalize(argv0))?;
    let file_name = to.file_name().ok_or_else(|| std::io::Error::other("the target has no file name"))?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = to.with_file_name(tmp_name);
    let _ = fs::remove_file(&tmp);
    fs::copy(&me, &tmp)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o555))?;
    fs::rename(&tmp, &to).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

// The C runtime is linked in anyway (statically); these two calls are all we need of it.
unsafe extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    fn _exit(status: i32) -> !;
}

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

extern "C" fn exit_now(_signal: i32) {
    // Async-signal-safe.
    unsafe { _exit(0) }
}

/// As PID 1 of a container the default action of SIGTERM is to ignore it: handle it.
fn sleep_until_signalled() -> ExitCode {
    unsafe {
        signal(SIGTERM, exit_now);
        signal(SIGINT, exit_now);
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
