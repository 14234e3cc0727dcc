//! `specwright-bench --baseline DIR`: this build's binaries beside an
//! earlier build's (DIR holds its `specwright` and `specwright-runc`), the
//! same operations sampled in alternation in one run, each as the new
//! build's time over the old one's. A refactoring passes when no figure is
//! more than 10% worse.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::containers::{busybox_rootfs, container_life, find, quiet, strings, true_bundle, with_flags, HARDENED};
use crate::measure::{fmt_time, measure_together, timed, Figure};

/// How much worse a figure may be.
const WORSE_AT_MOST: f64 = 1.10;

/// An operation run with the binaries in a directory, for a side
/// (`old`, `new`) with a state dir of its own.
type SideOp<'a> = Box<dyn FnMut(&Path, &str) -> Result<()> + 'a>;

/// One operation, before and after.
pub struct Compared {
    pub what: String,
    pub before: Figure,
    pub after: Figure,
}

impl Compared {
    pub fn ratio(&self) -> f64 {
        self.after.median() / self.before.median()
    }
}

/// Measures each operation with the binaries in `new` and in `old`.
pub fn compare(work: &Path, new: &Path, old: &Path, request: &Path, facts: &Path) -> Result<Vec<Compared>> {
    for bin in [new, old] {
        for name in ["specwright", "specwright-runc"] {
            anyhow::ensure!(bin.join(name).exists(), "{}: missing", bin.join(name).display());
        }
    }
    anyhow::ensure!(Path::new(HARDENED).exists(), "{HARDENED}: build the host first");
    let runc = find("runc")?;
    let rootfs = work.join("baseline-rootfs");
    busybox_rootfs(&rootfs)?;
    let per_sample = Duration::from_millis(300);
    let mut compared = Vec::new();
    let mut pair = |what: &str, mut op: SideOp<'_>| -> Result<()> {
        // Each side warms its own state dir (its compile cache) first.
        op(old, "old")?;
        op(new, "new")?;
        let op = std::cell::RefCell::new(op);
        let mut figures = measure_together(
            vec![
                timed(format!("{what} (before)"), || (op.borrow_mut())(old, "old")),
                timed(format!("{what} (after)"), || (op.borrow_mut())(new, "new")),
            ],
            per_sample,
        )?;
        let after = figures.pop().context("two figures")?;
        let before = figures.pop().context("two figures")?;
        compared.push(Compared {
            what: what.to_string(),
            before,
            after,
        });
        Ok(())
    };

    let state = |side: &str| work.join(format!("baseline-state-{side}"));
    let spec_args = |side: &str| {
        strings(&[
            "spec",
            "--request",
            request.to_str().unwrap_or_default(),
            "--host-facts",
            facts.to_str().unwrap_or_default(),
            "--state-dir",
            state(side).to_str().unwrap_or_default(),
        ])
    };
    pair(
        "specwright spec, the default policy (process, warm cache)",
        Box::new(|bin, side| quiet(&bin.join("specwright"), &spec_args(side), &[])),
    )?;
    pair(
        "specwright spec --dry-run, the default policy (process)",
        Box::new(|bin, side| {
            let mut args = spec_args(side);
            args.push("--dry-run".into());
            quiet(&bin.join("specwright"), &args, &[])
        }),
    )?;

    // The wrapper's command line for a side: hardened, through runc.
    let wrapper_args = |side: &str, args: &[&str]| {
        let flags = strings(&[
            &format!("--policy={HARDENED}"),
            &format!("--state-dir={}", state(side).display()),
            &format!("--real-runtime={}", runc.display()),
        ]);
        with_flags(&flags, args)
    };

    // specwright-runc create (hardened, through runc) and runc's delete.
    let bundle = work.join("baseline-bundle");
    let pristine = true_bundle(&runc, &bundle, &rootfs)?;
    pair(
        "specwright-runc create (hardened) + runc delete",
        Box::new(|bin, side| {
            std::fs::write(bundle.join("config.json"), &pristine)?;
            let id = format!("baseline-{side}");
            let args = wrapper_args(side, &["create", "--bundle", bundle.to_str().unwrap_or_default(), &id]);
            quiet(&bin.join("specwright-runc"), &args, &[])?;
            quiet(&runc, &strings(&["delete", "--force", &id]), &[])
        }),
    )?;

    // A container's whole life through the wrapper.
    pair(
        "a container's life through specwright-runc (hardened): create, start, delete --force",
        Box::new(|bin, side| {
            let flags = wrapper_args(side, &[]);
            let id = format!("baseline-life-{side}");
            container_life(&bin.join("specwright-runc"), &flags, &bundle, &pristine, &id)
        }),
    )?;

    // Commands the wrapper lets pass, with a policy configured.
    std::fs::write(bundle.join("config.json"), &pristine)?;
    quiet(
        &runc,
        &strings(&[
            "create",
            "--bundle",
            bundle.to_str().unwrap_or_default(),
            "baseline-state",
        ]),
        &[],
    )?;
    let passed = pair(
        "specwright-runc state (hardened configured)",
        Box::new(|bin, side| {
            quiet(
                &bin.join("specwright-runc"),
                &wrapper_args(side, &["state", "baseline-state"]),
                &[],
            )
        }),
    )
    .and_then(|()| {
        pair(
            "specwright-runc --version (hardened configured)",
            Box::new(|bin, side| quiet(&bin.join("specwright-runc"), &wrapper_args(side, &["--version"]), &[])),
        )
    });
    quiet(&runc, &strings(&["delete", "--force", "baseline-state"]), &[])?;
    passed?;

    // Thirty creates at once with a cold compile cache (each sample
    // empties it), then their deletes.
    pair(
        "30 concurrent specwright-runc creates (hardened), cold cache, + deletes",
        Box::new(|bin, side| {
            let cache = state(side).join("cache");
            if cache.exists() {
                std::fs::remove_dir_all(&cache)?;
            }
            let mut children = Vec::new();
            for i in 0..30 {
                let dir = work.join(format!("baseline-cold-{side}-{i}"));
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("config.json"), &pristine)?;
                let id = format!("baseline-cold-{side}-{i}");
                let args = wrapper_args(side, &["create", "--bundle", dir.to_str().unwrap_or_default(), &id]);
                children.push((
                    id,
                    std::process::Command::new(bin.join("specwright-runc"))
                        .args(&args)
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .spawn()?,
                ));
            }
            let mut failed = 0;
            for (_, child) in &mut children {
                failed += usize::from(!child.wait()?.success());
            }
            for (id, _) in &children {
                quiet(&runc, &strings(&["delete", "--force", id]), &[])?;
            }
            anyhow::ensure!(failed == 0, "{failed} of 30 creates failed");
            Ok(())
        }),
    )?;

    // specwright run of /bin/true under runc.
    let run_request = work.join("baseline-true.request.json");
    pair(
        "specwright run /bin/true (runc)",
        Box::new(|bin, side| {
            std::fs::write(
                &run_request,
                format!(r#"{{"id": "baseline-run-{side}", "args": ["/bin/true"], "env": ["PATH=/bin"], "cwd": "/"}}"#),
            )?;
            let args = strings(&[
                "run",
                "--runtime",
                runc.to_str().unwrap_or_default(),
                "--request",
                run_request.to_str().unwrap_or_default(),
                "--rootfs",
                rootfs.to_str().unwrap_or_default(),
                "--state-dir",
                state(side).to_str().unwrap_or_default(),
            ]);
            quiet(&bin.join("specwright"), &args, &[])
        }),
    )?;
    Ok(compared)
}

/// The comparison as a Markdown table, and whether every figure passes.
pub fn report(compared: &[Compared]) -> (String, bool) {
    let mut out = String::from("| what | before | after | after / before |\n| --- | --- | --- | --- |\n");
    let mut pass = true;
    for c in compared {
        let ratio = c.ratio();
        let worse = ratio > WORSE_AT_MOST;
        pass &= !worse;
        out.push_str(&format!(
            "| {} | {} ({} .. {}) | {} ({} .. {}) | {ratio:.2}x{} |\n",
            c.what,
            fmt_time(c.before.median()),
            fmt_time(c.before.p10()),
            fmt_time(c.before.p90()),
            fmt_time(c.after.median()),
            fmt_time(c.after.p10()),
            fmt_time(c.after.p90()),
            if worse { " WORSE" } else { "" }
        ));
    }
    (out, pass)
}
