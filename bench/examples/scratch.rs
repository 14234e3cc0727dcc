use specwright::audit::Audit;
use specwright::state::StateDir;
use specwright::step::{StepHost, StepOptions};
use specwright::sys::RecordingSyscalls;
use specwright_core::{HostFacts, Request};
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let t = Instant::now();
    let ok = specwright::validate::validate_json(r#"{"ociVersion":"1.0.2"}"#).is_ok();
    println!("first validate (builds the validator): {:?} {ok}", t.elapsed());
    let t = Instant::now();
    let _ = specwright::validate::validate_json(r#"{"ociVersion":"1.0.2"}"#).is_ok();
    println!("second validate: {:?}", t.elapsed());
    let dir = "../shared/oracle/cases";
    let json = std::fs::read_to_string(format!("{dir}/minimal.request.json")).unwrap();
    let facts: HostFacts =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/minimal.host.json")).unwrap()).unwrap();
    let state = StateDir::at(std::path::Path::new("/tmp/x"));
    let n = 20000;
    let time = |name: &str, f: &mut dyn FnMut()| {
        for _ in 0..1000 {
            f();
        }
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        println!("{name}: {:.2} µs", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    };
    let request = Request::from_json(&json).unwrap();
    time("parse", &mut || {
        let _ = Request::from_json(&json).unwrap();
    });
    time("stephost", &mut || {
        let _ = StepHost::new(
            state.clone(),
            Arc::new(RecordingSyscalls::dry_run()),
            Arc::new(Audit::events_only()),
            StepOptions {
                dry_run: true,
                ..StepOptions::default()
            },
            &request,
        )
        .unwrap();
    });
    let mut step = StepHost::new(
        state.clone(),
        Arc::new(RecordingSyscalls::dry_run()),
        Arc::new(Audit::events_only()),
        StepOptions {
            dry_run: true,
            ..StepOptions::default()
        },
        &request,
    )
    .unwrap();
    time("generate", &mut || {
        let _ = specwright_core::buildkit::generate(&request, &facts, &mut step).unwrap();
    });
    let spec = specwright_core::buildkit::generate(&request, &facts, &mut step).unwrap();
    time("to_json", &mut || {
        let _ = spec.to_json();
    });
    println!("spec bytes {}", spec.to_json().len());
    time("generate_without_mounts", &mut || {
        let _ = specwright_core::buildkit::generate_without_mounts(&request, &facts).unwrap();
    });
}
#[allow(dead_code)]
fn validator_cost() {}
