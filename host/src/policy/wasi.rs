//! The WASI a policy's language runtime links in, and what each of its
//! functions does here: a fixed seed for std's hash maps, a trap for the
//! rest. Only `wasi:` interfaces are stubbed; anything else a component
//! imports beyond our own package is refused by the caller.

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Linker, LinkerInstance, ResourceType};
use wasmtime::Engine;

use super::host::PolicyState;

/// Defines `import`, a `wasi:` instance the component imports, in `linker`.
pub(super) fn define(
    linker: &mut Linker<PolicyState>,
    engine: &Engine,
    import: &str,
    item: &ComponentItem,
) -> Result<(), String> {
    let mut instance = linker.instance(import).map_err(|e| e.to_string())?;
    if import.starts_with("wasi:random/insecure-seed@0.2.") {
        // Deterministic on purpose: a policy gets no randomness.
        return instance
            .func_wrap("insecure-seed", |_, (): ()| Ok(((0x5eed_u64, 0x5eed_u64),)))
            .map_err(|e| e.to_string());
    }
    define_as_traps(&mut instance, engine, import, item)
}

/// Every function of the instance traps, naming itself; its resources are
/// types of the host's that no function ever makes.
fn define_as_traps(
    instance: &mut LinkerInstance<'_, PolicyState>,
    engine: &Engine,
    import: &str,
    item: &ComponentItem,
) -> Result<(), String> {
    let ComponentItem::ComponentInstance(ty) = item else {
        return Err(format!("{import} is not an interface"));
    };
    for (name, export) in ty.exports(engine) {
        match export.ty {
            ComponentItem::ComponentFunc(_) => {
                let qualified = format!("{import}#{name}");
                instance
                    .func_new(name, move |_, _, _, _| {
                        Err(wasmtime::Error::msg(format!(
                            "{qualified} is not available to a policy"
                        )))
                    })
                    .map_err(|e| e.to_string())?;
            }
            ComponentItem::Resource(_) => instance
                .resource(name, ResourceType::host::<()>(), |_, _| Ok(()))
                .map_err(|e| e.to_string())?,
            _ => {}
        }
    }
    Ok(())
}
