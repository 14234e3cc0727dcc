//! The `specwright-runc` binary: the wrapper's front, which hands what
//! needs no policy straight to the real runtime and what the chain must
//! review to `specwright` beside it; the wrapper lives in
//! `specwright::runc`.

fn main() {
    std::process::exit(specwright::runc::front_main());
}
