//! The WASI a policy's language runtime links in, deny by default: each
//! interface of [`LINKED`] it imports is served by `wasmtime-wasi` over a context
//! that holds nothing of the host's, or by this module where that crate
//! would wait on the host's clock; the interfaces of [`TRAPPED`] load but
//! every function traps; anything else is refused at load by the caller.
//! Every answer is the same on every call, so the same request and facts
//! always give the same spec.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Linker, LinkerInstance, Resource, ResourceType};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream, WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::{self as wasi, sync as wasi_sync};
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::random::{WasiRandom, WasiRandomView};
use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsView};
use wasmtime_wasi::{HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use specwright_host_core::sys::SplitMix64;

use super::host::PolicyState;

/// An interface a policy may import, what it gets, and how it is linked.
pub struct Linked {
    /// The interface, without its version: one definition serves every
    /// 0.2 version.
    pub interface: &'static str,
    /// What a policy gets from it, for `policy inspect` and README.
    pub gets: &'static str,
    add: fn(&mut Linker<PolicyState>) -> wasmtime::Result<()>,
}

impl Linked {
    /// Adds the interface to `linker`: a policy is linked exactly what it
    /// imports.
    pub fn add_to(&self, linker: &mut Linker<PolicyState>) -> wasmtime::Result<()> {
        (self.add)(linker)
    }
}

/// The interfaces a policy may import (any `0.2.x`) besides specwright's
/// own, what their functions do here, and how each is linked. README's
/// table is this list.
pub const LINKED: &[Linked] = &[
    Linked {
        interface: "wasi:cli/environment",
        gets: "no variables, no arguments, no initial directory",
        add: |l| wasi::cli::environment::add_to_linker::<_, WasiCli>(l, WasiCliView::cli),
    },
    Linked {
        interface: "wasi:cli/exit",
        gets: "ends the call: the policy fails, naming the status",
        add: |l| wasi::cli::exit::add_to_linker::<_, WasiCli>(l, WasiCliView::cli),
    },
    Linked {
        interface: "wasi:cli/stdin",
        gets: "closed: a read ends at once",
        add: |l| wasi::cli::stdin::add_to_linker::<_, WasiCli>(l, WasiCliView::cli),
    },
    Linked {
        interface: "wasi:cli/stdout",
        gets: "kept (the first 64 KiB) and shown with the policy's error",
        add: |l| wasi::cli::stdout::add_to_linker::<_, WasiCli>(l, WasiCliView::cli),
    },
    Linked {
        interface: "wasi:cli/stderr",
        gets: "kept (the first 64 KiB) and shown with the policy's error",
        add: |l| wasi::cli::stderr::add_to_linker::<_, WasiCli>(l, WasiCliView::cli),
    },
    Linked {
        interface: "wasi:cli/terminal-input",
        gets: "no terminal",
        add: |l| wasi::cli::terminal_input::add_to_linker::<_, WasiCli>(l, WasiCliView::cli),
    },
    Linked {
        interface: "wasi:cli/terminal-output",
        gets: "no terminal",
        add: |l| wasi::cli::terminal_output::add_to_linker::<_, WasiCli>(l, WasiCliView::cli),
    },
    Linked {
        interface: "wasi:cli/terminal-stdin",
        gets: "no terminal",
        add: |l| wasi::cli::terminal_stdin::add_to_linker::<_, WasiCli>(l, WasiCliView::cli),
    },
    Linked {
        interface: "wasi:cli/terminal-stdout",
        gets: "no terminal",
        add: |l| wasi::cli::terminal_stdout::add_to_linker::<_, WasiCli>(l, WasiCliView::cli),
    },
    Linked {
        interface: "wasi:cli/terminal-stderr",
        gets: "no terminal",
        add: |l| wasi::cli::terminal_stderr::add_to_linker::<_, WasiCli>(l, WasiCliView::cli),
    },
    Linked {
        interface: "wasi:clocks/wall-clock",
        gets: "always 1970-01-01T00:00:00Z, resolution 1 ns",
        add: |l| wasi::clocks::wall_clock::add_to_linker::<_, WasiClocks>(l, WasiClocksView::clocks),
    },
    Linked {
        interface: "wasi:clocks/monotonic-clock",
        gets: "always 0, resolution 1 ns; a wait for any time is over at once",
        add: |l| add_monotonic_clock(l),
    },
    Linked {
        interface: "wasi:random/random",
        gets: "a generator with a fixed seed: the same bytes every call",
        add: |l| wasi::random::random::add_to_linker::<_, WasiRandom>(l, WasiRandomView::random),
    },
    Linked {
        interface: "wasi:random/insecure",
        gets: "a generator with a fixed seed: the same bytes every call",
        add: |l| wasi::random::insecure::add_to_linker::<_, WasiRandom>(l, WasiRandomView::random),
    },
    Linked {
        interface: "wasi:random/insecure-seed",
        gets: "a fixed seed",
        add: |l| wasi::random::insecure_seed::add_to_linker::<_, WasiRandom>(l, WasiRandomView::random),
    },
    Linked {
        interface: "wasi:io/error",
        gets: "the errors of stdin, stdout and stderr",
        add: |l| wasi_sync::io::error::add_to_linker::<_, Table>(l, |s| &mut s.table),
    },
    Linked {
        interface: "wasi:io/poll",
        gets: "waits on stdin, stdout, stderr and the clock: all ready at once",
        add: |l| wasi_sync::io::poll::add_to_linker::<_, Table>(l, |s| &mut s.table),
    },
    Linked {
        interface: "wasi:io/streams",
        gets: "stdin (closed), stdout and stderr (kept)",
        add: |l| wasi_sync::io::streams::add_to_linker::<_, Table>(l, |s| &mut s.table),
    },
    Linked {
        interface: "wasi:filesystem/preopens",
        gets: "no directory",
        add: |l| wasi::filesystem::preopens::add_to_linker::<_, WasiFilesystem>(l, WasiFilesystemView::filesystem),
    },
    Linked {
        interface: "wasi:filesystem/types",
        gets: "no file: a policy holds no descriptor",
        add: |l| wasi_sync::filesystem::types::add_to_linker::<_, WasiFilesystem>(l, WasiFilesystemView::filesystem),
    },
    Linked {
        interface: "wasi:sockets/network",
        gets: "a network that permits nothing",
        add: |l| {
            wasi::sockets::network::add_to_linker::<_, WasiSockets>(l, &Default::default(), WasiSocketsView::sockets)
        },
    },
    Linked {
        interface: "wasi:sockets/instance-network",
        gets: "a network that permits nothing",
        add: |l| wasi::sockets::instance_network::add_to_linker::<_, WasiSockets>(l, WasiSocketsView::sockets),
    },
    Linked {
        interface: "wasi:sockets/tcp-create-socket",
        gets: "refused (access-denied)",
        add: |l| wasi::sockets::tcp_create_socket::add_to_linker::<_, WasiSockets>(l, WasiSocketsView::sockets),
    },
    Linked {
        interface: "wasi:sockets/tcp",
        gets: "no socket exists to use",
        add: |l| wasi_sync::sockets::tcp::add_to_linker::<_, WasiSockets>(l, WasiSocketsView::sockets),
    },
    Linked {
        interface: "wasi:sockets/udp-create-socket",
        gets: "refused (access-denied)",
        add: |l| wasi_sync::sockets::udp_create_socket::add_to_linker::<_, WasiSockets>(l, WasiSocketsView::sockets),
    },
    Linked {
        interface: "wasi:sockets/udp",
        gets: "no socket exists to use",
        add: |l| wasi_sync::sockets::udp::add_to_linker::<_, WasiSockets>(l, WasiSocketsView::sockets),
    },
    Linked {
        interface: "wasi:sockets/ip-name-lookup",
        gets: "refused (access-denied)",
        add: |l| wasi::sockets::ip_name_lookup::add_to_linker::<_, WasiSockets>(l, WasiSocketsView::sockets),
    },
];

/// Interfaces that load, whose every function traps naming itself (a
/// JavaScript runtime imports `wasi:http` for `fetch`; a policy has no
/// network).
pub const TRAPPED: &[&str] = &["wasi:http/"];

/// How much of each of stdout and stderr a call keeps.
pub const OUTPUT_BYTES: usize = 64 << 10;

/// The most random bytes one call may ask for: the host makes them before
/// the policy's memory limit sees them, so a large ask traps instead.
pub const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// The seed of every generator a policy gets.
const SEED: u64 = 0x5eed_5eed_5eed_5eed;

/// The interface of [`LINKED`] that `import` is a version of.
pub fn linked(import: &str) -> Option<&'static Linked> {
    let (name, _) = import.split_once("@0.2.")?;
    LINKED.iter().find(|linked| linked.interface == name)
}

/// Whether `import` is an interface every function of which traps.
pub fn is_trapped(import: &str) -> bool {
    import.contains("@0.2.") && TRAPPED.iter().any(|prefix| import.starts_with(prefix))
}

/// A call's WASI context and what it wrote.
pub struct WasiState {
    pub(super) ctx: WasiCtx,
    pub(super) stdout: CapturedOutput,
    pub(super) stderr: CapturedOutput,
}

impl WasiState {
    /// A context with nothing of the host's: no variables, arguments,
    /// directories or network; stdin closed; fixed clocks and seeds.
    pub fn new() -> WasiState {
        let stdout = CapturedOutput::default();
        let stderr = CapturedOutput::default();
        let ctx = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .wall_clock(FixedWallClock)
            .secure_random(FixedSeedRng::new())
            .insecure_random(FixedSeedRng::new())
            .insecure_random_seed(u128::from(SEED))
            .max_random_size(MAX_RANDOM_BYTES)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        WasiState { ctx, stdout, stderr }
    }

    /// What the call wrote to stderr, then stdout, for an error message;
    /// empty when it wrote nothing.
    pub fn output(&self) -> String {
        [("stderr", &self.stderr), ("stdout", &self.stdout)]
            .iter()
            .filter_map(|(name, out)| out.text().map(|text| format!("\n{name} of the policy:\n{text}")))
            .collect()
    }
}

/// A call's WASI context is made when the policy first uses WASI: a Rust
/// policy's step usually never does.
impl WasiView for PolicyState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let wasi = self.wasi.get_or_insert_with(WasiState::new);
        WasiCtxView {
            ctx: &mut wasi.ctx,
            table: &mut self.table,
        }
    }
}

/// The resource table, for `wasi:io`.
struct Table;

impl wasmtime::component::HasData for Table {
    type Data<'a> = &'a mut wasmtime::component::ResourceTable;
}

/// `wasi:clocks/monotonic-clock`, frozen: `wasmtime-wasi`'s waits on the
/// host's clock, which the time limit cannot interrupt (it stops only
/// policy code).
fn add_monotonic_clock(linker: &mut Linker<PolicyState>) -> wasmtime::Result<()> {
    let mut clock = linker.instance("wasi:clocks/monotonic-clock@0.2.12")?;
    clock.func_wrap("now", |_, (): ()| Ok((0u64,)))?;
    clock.func_wrap("resolution", |_, (): ()| Ok((1u64,)))?;
    clock.func_wrap("subscribe-instant", |mut store, (_,): (u64,)| {
        Ok((waited(&mut store.data_mut().table)?,))
    })?;
    clock.func_wrap("subscribe-duration", |mut store, (_,): (u64,)| {
        Ok((waited(&mut store.data_mut().table)?,))
    })?;
    Ok(())
}

/// A wait that is over: time does not pass for a policy.
struct Waited;

#[wasmtime_wasi::async_trait]
impl Pollable for Waited {
    async fn ready(&mut self) {}
}

fn waited(table: &mut wasmtime::component::ResourceTable) -> wasmtime::Result<Resource<DynPollable>> {
    let waited = table.push(Waited)?;
    wasmtime_wasi::p2::subscribe(table, waited)
}

/// The Unix epoch, always.
struct FixedWallClock;

impl HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

/// SplitMix64 from [`SEED`]: well-mixed bits, the same sequence for every
/// call.
struct FixedSeedRng(SplitMix64);

impl FixedSeedRng {
    fn new() -> FixedSeedRng {
        FixedSeedRng(SplitMix64(SEED))
    }
}

impl rand_core::TryRng for FixedSeedRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        self.try_next_u64().map(|bits| (bits >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.0.next())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let bits = self.try_next_u64()?.to_le_bytes();
            chunk.copy_from_slice(&bits[..chunk.len()]);
        }
        Ok(())
    }
}

/// stdout or stderr of a call: the first [`OUTPUT_BYTES`] are kept, the
/// rest is dropped; a write never fails.
#[derive(Clone, Default)]
pub struct CapturedOutput(Arc<Mutex<Captured>>);

#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    dropped: usize,
}

impl CapturedOutput {
    fn keep(&self, bytes: &[u8]) {
        let Ok(mut captured) = self.0.lock() else {
            return;
        };
        let room = OUTPUT_BYTES.saturating_sub(captured.kept.len());
        let kept = bytes.len().min(room);
        captured.kept.extend_from_slice(&bytes[..kept]);
        captured.dropped += bytes.len() - kept;
    }

    /// What was written, as text; `None` when nothing was.
    pub fn text(&self) -> Option<String> {
        let captured = self.0.lock().ok()?;
        if captured.kept.is_empty() {
            return None;
        }
        let mut text = String::from_utf8_lossy(&captured.kept).trim_end().to_string();
        if captured.dropped > 0 {
            text.push_str(&format!("\n[{} more bytes dropped]", captured.dropped));
        }
        Some(text)
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.keep(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(OUTPUT_BYTES)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.keep(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The resources of `wasi:io` a component imports, each beside the host
/// type that serves it: an interface of [`TRAPPED`] that uses one (a body's
/// `input-stream`) must name the very type the linked interface defines.
pub fn io_resources(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::types::Component,
) -> Vec<(ResourceType, ResourceType)> {
    let host_type = |import: &str, name: &str| match (import.split_once('@').map(|(i, _)| i), name) {
        (Some("wasi:io/streams"), "input-stream") => Some(ResourceType::host::<wasmtime_wasi::p2::DynInputStream>()),
        (Some("wasi:io/streams"), "output-stream") => Some(ResourceType::host::<wasmtime_wasi::p2::DynOutputStream>()),
        (Some("wasi:io/poll"), "pollable") => Some(ResourceType::host::<DynPollable>()),
        (Some("wasi:io/error"), "error") => Some(ResourceType::host::<wasmtime_wasi::p2::IoError>()),
        _ => None,
    };
    let mut found = Vec::new();
    for (import, item) in component.imports(engine) {
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            continue;
        };
        for (name, export) in instance.exports(engine) {
            if let (ComponentItem::Resource(ty), Some(host)) = (export.ty, host_type(import, name)) {
                found.push((ty, host));
            }
        }
    }
    found
}

/// Defines `import`, an interface of [`TRAPPED`], so that every function
/// traps naming itself. Its own resources are types of the host's that no
/// function ever makes; one it uses from `wasi:io` is the linked one
/// (`io` from [`io_resources`]).
pub fn define_as_traps(
    linker: &mut Linker<PolicyState>,
    engine: &wasmtime::Engine,
    import: &str,
    item: &ComponentItem,
    io: &[(ResourceType, ResourceType)],
) -> Result<(), String> {
    let ComponentItem::ComponentInstance(ty) = item else {
        return Err(format!("{import} is not an interface"));
    };
    let mut instance: LinkerInstance<'_, PolicyState> = linker.instance(import).map_err(|e| e.to_string())?;
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
            ComponentItem::Resource(resource) => {
                let host = io
                    .iter()
                    .find(|(used, _)| *used == resource)
                    .map_or_else(ResourceType::host::<()>, |(_, host)| *host);
                instance
                    .resource(name, host, |_, _| Ok(()))
                    .map_err(|e| e.to_string())?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::Rng;

    #[test]
    fn imports_are_linked_by_interface_and_any_0_2_version() {
        assert!(linked("wasi:cli/environment@0.2.0").is_some());
        assert!(linked("wasi:io/streams@0.2.12").is_some());
        assert!(linked("wasi:cli/environment@0.3.0").is_none());
        assert!(linked("wasi:cli/environment").is_none());
        assert!(linked("wasi:keyvalue/store@0.2.0").is_none());
        assert!(is_trapped("wasi:http/types@0.2.10"));
        assert!(!is_trapped("wasi:http/types@0.3.0-rc"));
        assert!(!is_trapped("wasi:cli/stdout@0.2.0"));
    }

    #[test]
    fn the_generator_gives_the_same_bytes_every_time() {
        let (mut a, mut b) = (FixedSeedRng::new(), FixedSeedRng::new());
        let (mut x, mut y) = ([0u8; 13], [0u8; 13]);
        a.fill_bytes(&mut x);
        b.fill_bytes(&mut y);
        assert_eq!(x, y);
        assert_ne!(x, [0u8; 13]);
        assert_ne!(a.next_u64(), a.next_u64());
    }

    #[test]
    fn output_keeps_its_first_bytes_and_counts_the_rest() {
        let out = CapturedOutput::default();
        assert_eq!(out.text(), None);
        out.keep(b"hello\n");
        assert_eq!(out.text().as_deref(), Some("hello"));
        out.keep(&vec![b'x'; OUTPUT_BYTES]);
        let text = out.text().unwrap();
        assert!(text.ends_with("[6 more bytes dropped]"), "{}", &text[text.len() - 40..]);
    }
}
