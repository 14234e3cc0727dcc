//! The `specwright` binary; the command line lives in `specwright::cli`.

fn main() {
    std::process::exit(specwright::cli::main());
}
