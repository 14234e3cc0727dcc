//! The floor of a pass-through in Rust: a process that only execs its
//! arguments (`bench-exec-floor PROGRAM [ARGS...]`). `just bench` sets it
//! beside `specwright-runc` and the runtime called directly.

use std::os::unix::process::CommandExt;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: bench-exec-floor PROGRAM [ARGS...]");
        std::process::exit(2);
    };
    let error = std::process::Command::new(&program).args(args).exec();
    eprintln!("bench-exec-floor: {}: {error}", program.to_string_lossy());
    std::process::exit(127);
}
