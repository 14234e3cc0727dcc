//! `specwright policy compile|inspect`.

use std::sync::Arc;

use anyhow::{Context, Result};

use super::{open_workspace, PolicyCommand};
use crate::cache::CacheUse;
use crate::policy::{Engine, ImportUse, Limits};

/// Runs `command`; returns the exit code.
pub(super) fn policy_command(command: PolicyCommand) -> Result<i32> {
    match command {
        PolicyCommand::Push {
            registry,
            file,
            reference,
        } => {
            let reference = crate::oci::Reference::parse(&reference)?;
            let connection = registry.connection()?;
            let runtime = Engine::new(Limits::default())?;
            let (name, bytes) = Engine::read_policy_file(&file)?;
            let info = runtime.inspect(&name, &bytes)?;
            let component = crate::oci::ComponentInfo {
                exports: info.exports,
                imports: info.imports,
                target: info.targets,
            };
            let digest = crate::registry::push(&file, &reference, component, bytes.into_owned(), &connection)
                .with_context(|| format!("pushing {} to {reference}", file.display()))?;
            println!("pushed {reference}");
            println!("digest: {digest}");
            Ok(0)
        }
        PolicyCommand::Pull {
            state_dir,
            registry,
            reference,
        } => {
            let reference = crate::oci::Reference::parse(&reference)?;
            let connection = registry.connection()?;
            // Fetched and checked first: a pull that fails leaves the
            // state dir as it was, made or not.
            let pulled =
                crate::registry::pull(&reference, &connection).with_context(|| format!("pulling {reference}"))?;
            let workspace = open_workspace(&state_dir, Arc::new(crate::sys::RealSyscalls))?;
            pulled.store(&workspace)?;
            let digest = pulled.manifest_digest;
            println!("pulled {reference}");
            println!("digest: {digest}");
            println!("use: --policy {}", reference.with_digest(digest));
            Ok(0)
        }
        PolicyCommand::Test {
            policy,
            cases,
            state_dir,
            policy_timeout_ms,
            policy_memory_mib,
        } => {
            let limits = Limits::from_flags(Some(policy_timeout_ms), Some(policy_memory_mib))?;
            let mut engine = Engine::new(limits)?;
            if let Some(dir) = state_dir {
                let workspace = open_workspace(&dir, Arc::new(crate::sys::RealSyscalls))?;
                engine = engine
                    .with_cache(workspace.compile_cache()?)
                    .with_pulled_policies(&workspace);
            }
            let all_passed = super::policy_test::run_cases(&engine, &policy, &cases)?;
            Ok(if all_passed { 0 } else { 1 })
        }
        PolicyCommand::Compile { state_dir, files } => {
            let workspace = open_workspace(&state_dir, Arc::new(crate::sys::RealSyscalls))?;
            let runtime = Engine::new(Limits::default())?.with_cache(workspace.compile_cache()?);
            for file in files {
                let (name, bytes) = Engine::read_policy_file(&file)?;
                let (_, used) = runtime.compile(&name, &bytes)?;
                let verb = match used {
                    Some(CacheUse::Hit) => "already cached",
                    _ => "compiled",
                };
                println!("{name}: {verb}");
            }
            Ok(0)
        }
        PolicyCommand::Inspect { file, json } => {
            let runtime = Engine::new(Limits::default())?;
            let (name, bytes) = Engine::read_policy_file(&file)?;
            let info = runtime.inspect(&name, &bytes)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
                return Ok(0);
            }
            println!("policy:      {} {}", info.name, info.version);
            println!("description: {}", info.description);
            println!(
                "targets:     {}",
                info.targets
                    .as_deref()
                    .unwrap_or("(does not import the specwright host)")
            );
            println!("size:        {} bytes", info.size_bytes);
            println!("exports:     {}", info.exports.join(", "));
            println!("imports (and what each gets here):");
            let width = info.import_uses.iter().map(|u| u.import.len()).max().unwrap_or(0);
            for ImportUse { import, gets } in &info.import_uses {
                println!("  {import:width$}  {gets}");
            }
            Ok(0)
        }
    }
}
