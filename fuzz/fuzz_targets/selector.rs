//! Selector resolution inside a fixed tree full of symlinks (absolute,
//! relative, escaping, looping, dangling, chained). Property: what resolves
//! is always inside the root. Oracle: an in-memory model of continuity's
//! `RootPath` semantics over the same tree must give the same answer, so
//! the `pathrs` fast path and our own descriptor walk are both checked.

#![no_main]

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nix::errno::Errno;
use specwright_host_core::resolve::{resolve_in_root, ResolveError, MAX_LINKS};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    File,
    Link(&'static str),
}

const TREE: &[(&str, Node)] = &[
    ("sub", Node::Dir),
    ("sub/dir", Node::Dir),
    ("sub/other", Node::Dir),
    ("sub/dir/file", Node::File),
    ("top", Node::File),
    ("deep", Node::Dir),
    ("deep/a", Node::Dir),
    ("deep/a/b", Node::Dir),
    ("link_abs", Node::Link("/sub/dir")),
    ("link_out_abs", Node::Link("/etc")),
    ("link_rel", Node::Link("sub/dir")),
    ("link_rel_escape", Node::Link("../../../../etc")),
    ("dirlink", Node::Link("sub")),
    ("loop1", Node::Link("loop2")),
    ("loop2", Node::Link("loop1")),
    ("self", Node::Link("self")),
    ("sub/uplink", Node::Link("../sub/dir")),
    ("dangling", Node::Link("missing/x")),
    ("chain1", Node::Link("chain2")),
    ("chain2", Node::Link("/chain3")),
    ("chain3", Node::Link("link_rel/../other")),
    ("dotdot", Node::Link("..")),
    ("dot", Node::Link(".")),
    ("root_link", Node::Link("/")),
    ("file_link", Node::Link("sub/dir/file")),
    ("slashy", Node::Link("//sub///dir//")),
    ("deep/a/b/up", Node::Link("../../../..")),
    ("deep/a/b/abs_up", Node::Link("/deep/../..")),
    ("deep/a/b/sideways", Node::Link("../../../sub/uplink/file")),
];

fn tree() -> &'static (PathBuf, BTreeMap<String, Node>) {
    static TREE_ON_DISK: OnceLock<(PathBuf, BTreeMap<String, Node>)> = OnceLock::new();
    TREE_ON_DISK.get_or_init(|| {
        // Kept for the life of the process.
        let dir = tempfile::tempdir().expect("a temporary directory").keep();
        let root = std::fs::canonicalize(&dir).expect("its canonical path").join("root");
        std::fs::create_dir(&root).expect("the root");
        for (path, node) in TREE {
            let at = root.join(path);
            match node {
                Node::Dir => std::fs::create_dir(&at).expect("a directory"),
                Node::File => std::fs::write(&at, "file\n").expect("a file"),
                Node::Link(target) => std::os::unix::fs::symlink(target, &at).expect("a symlink"),
            }
        }
        (root, TREE.iter().map(|(p, n)| (p.to_string(), *n)).collect())
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Model {
    /// The path below the root, and whether every component exists.
    Found(String, bool),
    TooManyLinks,
    Errno(Errno),
    Nul,
}

fn components(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split('/').filter(|c| !c.is_empty()).map(str::to_string)
}

/// continuity's `RootPath` over the in-memory tree.
fn model(nodes: &BTreeMap<String, Node>, selector: &str) -> Model {
    if selector.contains('\0') {
        return Model::Nul;
    }
    let mut queue: VecDeque<String> = components(selector).collect();
    let mut stack: Vec<(String, bool)> = Vec::new();
    let mut links = 0;
    while let Some(name) = queue.pop_front() {
        match name.as_str() {
            "." => continue,
            ".." => {
                stack.pop();
                continue;
            }
            _ => {}
        }
        if stack.last().is_some_and(|(_, exists)| !exists) {
            stack.push((name, false));
            continue;
        }
        let parent: Vec<&str> = stack.iter().map(|(n, _)| n.as_str()).collect();
        let parent = parent.join("/");
        if nodes.get(&parent) == Some(&Node::File) {
            return Model::Errno(Errno::ENOTDIR);
        }
        if name.len() > 255 {
            return Model::Errno(Errno::ENAMETOOLONG);
        }
        let full = if parent.is_empty() {
            name.clone()
        } else {
            format!("{parent}/{name}")
        };
        match nodes.get(&full) {
            None => stack.push((name, false)),
            Some(Node::Dir | Node::File) => stack.push((name, true)),
            Some(Node::Link(target)) => {
                links += 1;
                if links > MAX_LINKS {
                    return Model::TooManyLinks;
                }
                if target.starts_with('/') {
                    stack.clear();
                }
                for (i, c) in components(target).enumerate() {
                    queue.insert(i, c);
                }
            }
        }
    }
    let path: Vec<&str> = stack.iter().map(|(n, _)| n.as_str()).collect();
    Model::Found(format!("/{}", path.join("/")), stack.iter().all(|(_, exists)| *exists))
}

fuzz_target!(|data: &[u8]| {
    let Ok(selector) = std::str::from_utf8(data) else {
        return;
    };
    if selector.len() > 1024 {
        return;
    }
    let (root, nodes) = tree();
    let root_str = root.to_str().expect("a UTF-8 temporary directory");
    let got = match resolve_in_root(root, selector) {
        Ok(resolved) => {
            // The property, whatever the model says.
            let below = resolved
                .path
                .strip_prefix(root_str)
                .filter(|rest| rest.is_empty() || rest.starts_with('/'))
                .unwrap_or_else(|| panic!("{selector:?} resolved outside the root: {}", resolved.path));
            assert!(
                !below.split('/').any(|c| c == ".."),
                "{selector:?} -> {}",
                resolved.path
            );
            let below = if below.is_empty() {
                "/".to_string()
            } else {
                below.to_string()
            };
            Model::Found(below, resolved.object.is_some())
        }
        Err(ResolveError::TooManyLinks) => Model::TooManyLinks,
        Err(ResolveError::Io { errno, .. }) => Model::Errno(errno),
        Err(ResolveError::Nul(_)) => Model::Nul,
        Err(e) => panic!("{selector:?}: unexpected {e}"),
    };
    let want = model(nodes, selector);
    assert_eq!(got, want, "selector {selector:?}");
});
