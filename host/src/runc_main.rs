//! The `specwright-runc` binary; the wrapper lives in `specwright::runc`.

fn main() {
    std::process::exit(specwright::runc::main());
}
