//! Which paths to watch for one file: the file as the pipeline names it, and every symlink met
//! on the way to what it resolves to.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

/// How a watched file is known: its absolute path as the pipeline names it. Symlinks on the way
/// are deliberately not resolved here: what they point at may change while the file is watched
/// (see [`resolution`]), and the file must stay the same file across that change.
pub(super) fn key(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The most symlinks followed in resolving one path (Linux's limit): a loop ends there.
const MAX_LINKS: usize = 40;

/// The paths whose change can change what reading `file` (absolute) gives, spelled through real
/// directories, as the watcher reports paths under the directories it watches: `file` itself,
/// and where it is a symlink or lies under one, every link met while resolving it and the file
/// it resolves to.
///
/// Watching `file`'s directory alone misses what happens behind a link. Kubernetes mounts a
/// ConfigMap as `name -> ..data/name`, `..data` being a link to a directory holding the current
/// version, and updates it by renaming a new link over `..data`: the events name `..data`, never
/// `name`. A plugin linked to a release elsewhere changes where no watched directory sees it.
pub(super) fn resolution(file: &Path) -> Vec<PathBuf> {
    use std::path::Component;
    fn parts(path: &Path) -> impl DoubleEndedIterator<Item = Component<'_>> {
        path.components()
            .filter(|c| !matches!(c, Component::CurDir | Component::Prefix(_)))
    }
    let mut found = vec![file.to_path_buf()];
    let mut todo: std::collections::VecDeque<std::ffi::OsString> =
        std::collections::VecDeque::new();
    // Components are kept as text: `/` for the root, `..` for a parent.
    let text = |c: Component<'_>| c.as_os_str().to_os_string();
    todo.extend(parts(file).map(text));
    let mut at = PathBuf::from("/");
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        if part == "/" {
            at = PathBuf::from("/");
        } else if part == ".." {
            at.pop();
        } else {
            let next = at.join(&part);
            match std::fs::read_link(&next) {
                Ok(target) if links < MAX_LINKS => {
                    links += 1;
                    // A relative target is resolved from the link's directory: `at` as it is.
                    for c in parts(&target).rev() {
                        todo.push_front(text(c));
                    }
                    found.push(next);
                }
                _ => at = next,
            }
        }
    }
    found.push(at);
    let mut seen = HashSet::new();
    found.retain(|p| seen.insert(p.clone()));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_known_by_its_absolute_path_with_its_links_unresolved() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.wasm");
        let roundabout = dir.path().join(".").join("p.wasm");
        assert_eq!(key(&file), key(&roundabout));
        // Through a linked directory, the file is still the one behind the link, whatever the
        // link points at now.
        std::fs::create_dir(dir.path().join("v1")).unwrap();
        std::os::unix::fs::symlink("v1", dir.path().join("current")).unwrap();
        let linked = dir.path().join("current").join("p.wasm");
        assert_eq!(key(&linked), std::path::absolute(&linked).unwrap());
        assert_ne!(key(&linked), key(&dir.path().join("v1").join("p.wasm")));
    }

    #[test]
    fn a_file_behind_links_is_watched_through_every_link_and_its_target() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        // A ConfigMap as Kubernetes mounts it: `p.wasm -> ..data/p.wasm`, `..data -> ..v1`.
        std::fs::create_dir(root.join("..v1")).unwrap();
        std::fs::write(root.join("..v1/p.wasm"), b"v1").unwrap();
        symlink("..v1", root.join("..data")).unwrap();
        symlink("..data/p.wasm", root.join("p.wasm")).unwrap();
        let through_data = vec![
            root.join("p.wasm"),
            root.join("..data"),
            root.join("..v1/p.wasm"),
        ];
        assert_eq!(resolution(&root.join("p.wasm")), through_data);

        // A plain file is only itself.
        assert_eq!(
            resolution(&root.join("..v1/p.wasm")),
            vec![root.join("..v1/p.wasm")]
        );
        // A link from another directory, relative with `..`, then through the same links.
        std::fs::create_dir(root.join("sub")).unwrap();
        symlink("../p.wasm", root.join("sub/q.wasm")).unwrap();
        let mut from_sub = vec![root.join("sub/q.wasm")];
        from_sub.extend(through_data.clone());
        assert_eq!(resolution(&root.join("sub/q.wasm")), from_sub);
        // An absolute link, and a link in the middle of the path.
        symlink(root.join("..data"), root.join("abs")).unwrap();
        assert_eq!(
            resolution(&root.join("abs/p.wasm")),
            vec![
                root.join("abs/p.wasm"),
                root.join("abs"),
                root.join("..data"),
                root.join("..v1/p.wasm")
            ]
        );
        // The update: `..data` renamed over by a link to the next version.
        std::fs::create_dir(root.join("..v2")).unwrap();
        std::fs::write(root.join("..v2/p.wasm"), b"v2").unwrap();
        symlink("..v2", root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        assert_eq!(
            resolution(&root.join("p.wasm"))[2],
            root.join("..v2/p.wasm")
        );
        // A loop ends.
        symlink("loop", root.join("loop")).unwrap();
        assert_eq!(resolution(&root.join("loop")), vec![root.join("loop")]);
    }
}
