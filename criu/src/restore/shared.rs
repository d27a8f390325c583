//! What several tasks of a tree share, made by the engine before the first task is created: the
//! open files and pipes several tasks hold (each made by its kind, see [`crate::files`]), and
//! the shared anonymous memory several tasks map; and the pids of the fill helpers. How each
//! task gets its session and group is in [`super::session`], the page the tasks and the engine
//! synchronise through in [`super::sync`].
//!
//! Everything here is inherited: the engine creates it, the root inherits it when it is cloned
//! and passes it down as it forks its children; each task keeps what it needs and drops the
//! rest before its restorer runs.
// Unsafe code: shared objects made before the tasks: mappings (mmap, munmap), raw reads and
// writes, descriptor flags.
#![allow(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};

use std::sync::Arc;

use super::error::RestoreError;
use super::layout::{PAGE, page_up};
use super::plan::{FdSource, TaskPlan, TreePlan, VmaKind};
use crate::files::owned;
use crate::files::{RestoreFile, kind_name};

/// What one open file is, for sharing: an object made with several files (a pipe) by its kind
/// and group, anything else by its file id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Group(i32, u64),
    File(u32),
}

fn key_of(source: &FdSource, file_id: u32) -> Option<(Key, &Arc<dyn RestoreFile>)> {
    match source {
        FdSource::Dup { .. } => None,
        FdSource::File(f) => {
            let key = match f.group() {
                Some(g) => Key::Group(f.fd_type() as i32, g),
                None => Key::File(file_id),
            };
            Some((key, f))
        }
    }
}

/// What the engine knows of the objects it makes: each object's file, the object of each
/// file id, and a shared epoll's targets (object and end).
struct Graph<'a> {
    objects: &'a HashMap<Key, &'a Arc<dyn RestoreFile>>,
    key_of_file: &'a HashMap<u32, Key>,
    targets: &'a HashMap<Key, Vec<(Key, usize)>>,
}

/// The object (and which of its ends) behind descriptor `n` of task `t`, through its dups.
fn resolve(t: &TaskPlan, mut n: i32) -> Option<(Key, usize)> {
    for _ in 0..=t.fds.len() {
        let f = t.fds.iter().find(|f| f.fd == n)?;
        match &f.source {
            FdSource::Dup { of } => n = *of,
            FdSource::File(_) => {
                return key_of(&f.source, f.file_id).map(|(k, file)| (k, file.end()));
            }
        }
    }
    None
}

/// The objects the engine made for several tasks.
#[derive(Debug, Default)]
pub struct Shared {
    /// For each task: target fd -> engine descriptor.
    pub fds: Vec<HashMap<i32, i32>>,
    /// shmid -> engine address of the object.
    pub shm: HashMap<u64, u64>,
    /// The lowest number the tasks' service descriptors may use.
    pub fd_floor: i32,
    owned: Vec<OwnedFd>,
    /// Files that exist only once the tree does ([`RestoreFile::needs_tree`]), held by
    /// several tasks: a placeholder descriptor each for now, which the engine replaces with
    /// the file once every task is born ([`Late::open`]); the tasks take it from the engine
    /// then (`pidfd_getfd`), not from what they inherited.
    pub late: Vec<Late>,
    /// The files the engine made, for [`RestoreFile::after_tree`] once every task is born.
    pub after: Vec<Arc<dyn RestoreFile>>,
    maps: Vec<(u64, u64)>,
}

/// A file the engine opens for several tasks once the tree exists, at a number it holds now.
#[derive(Debug)]
pub struct Late {
    /// The engine's descriptor: a placeholder until [`Late::open`].
    pub fd: OwnedFd,
    file: Arc<dyn RestoreFile>,
}

impl Late {
    /// Opens the file (the tree exists now) at the placeholder's number.
    ///
    /// # Errors
    /// What opening it fails with ([`RestoreError::MissingFile`], ...), [`RestoreError::Sys`].
    pub fn open(&self) -> Result<(), RestoreError> {
        let made = self.file.make_in_engine()?;
        let Some(f) = made.first() else {
            return Err(RestoreError::Sys {
                what: "opening a file of the tree for several tasks",
                errno: nix::errno::Errno::ENOENT,
            });
        };
        // SAFETY: dup3 between two descriptors the engine owns; the placeholder's number now
        // holds the file.
        let r = unsafe { libc::dup3(f.as_raw_fd(), self.fd.as_raw_fd(), libc::O_CLOEXEC) };
        if r < 0 {
            return Err(sys("placing a file of the tree for several tasks"));
        }
        Ok(())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        for &(a, len) in &self.maps {
            // SAFETY: a mapping this module made and nothing of ours points into any more
            // (tasks have their own copies).
            unsafe { libc::munmap(a as *mut libc::c_void, len as usize) };
        }
    }
}

fn sys(what: &'static str) -> RestoreError {
    RestoreError::Sys {
        what,
        errno: nix::errno::Errno::last(),
    }
}

fn dup_at_least(fd: OwnedFd, min: i32) -> Result<OwnedFd, RestoreError> {
    // SAFETY: fcntl on a descriptor we own; the copy is ours too.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    if r < 0 {
        return Err(sys("moving a shared descriptor up"));
    }
    Ok(owned(r))
}

impl Shared {
    /// Makes every open file, pipe and shared anonymous object that more than one task of
    /// `tree` holds.
    ///
    /// # Errors
    /// [`RestoreError::MissingFile`], [`RestoreError::Sys`], [`RestoreError::Io`].
    pub fn build(tree: &TreePlan) -> Result<Shared, RestoreError> {
        let n = tree.tasks.len();
        let mut out = Shared::default();
        out.fds = vec![HashMap::new(); n];
        let max_fd = tree
            .tasks
            .iter()
            .flat_map(|t| t.fds.iter().map(|f| f.fd))
            .max()
            .unwrap_or(2)
            .max(2);
        let floor = max_fd + 1;
        // Which tasks hold each open file, and the file ids of each object.
        let mut holders: HashMap<Key, HashSet<usize>> = HashMap::new();
        let mut objects: HashMap<Key, &Arc<dyn RestoreFile>> = HashMap::new();
        let mut key_of_file: HashMap<u32, Key> = HashMap::new();
        for (i, t) in tree.alive() {
            for f in &t.fds {
                if let Some((k, file)) = key_of(&f.source, f.file_id) {
                    holders.entry(k).or_default().insert(i);
                    objects.entry(k).or_insert(file);
                    key_of_file.insert(f.file_id, k);
                }
            }
        }
        // Files in flight in a socket's queue ([`RestoreFile::engine_files`]): made by the
        // engine before the object that sends them, whether a task holds them or not.
        let mut flight: HashMap<Key, Vec<(Key, usize)>> = HashMap::new();
        let senders: Vec<(Key, &Arc<dyn RestoreFile>)> =
            objects.iter().map(|(k, f)| (*k, *f)).collect();
        for (k, file) in senders {
            for (id, f) in file.engine_files() {
                let key = match key_of_file.get(id) {
                    Some(&key) => key,
                    None => {
                        let key = match f.group() {
                            Some(g) => Key::Group(f.fd_type() as i32, g),
                            None => Key::File(*id),
                        };
                        objects.entry(key).or_insert(f);
                        key_of_file.insert(*id, key);
                        key
                    }
                };
                flight.entry(k).or_default().push((key, f.end()));
            }
        }
        let in_flight: HashSet<Key> = flight.values().flatten().map(|(k, _)| *k).collect();
        // What the engine makes: objects several tasks hold, those their kind has the engine
        // make, files in flight, and files that exist only with the tree (opened once every
        // task is born, whichever task holds them and wherever the process they name sits in
        // the tree).
        let in_engine = |k: &Key| {
            holders.get(k).is_some_and(|h| h.len() > 1)
                && !objects.get(k).is_some_and(|f| f.per_task())
                || in_flight.contains(k)
                || objects
                    .get(k)
                    .is_some_and(|f| f.made_by_engine() || f.needs_tree())
        };
        // The files a shared epoll watches: its targets are numbers of the first task holding
        // it (the one the dump met it in); the engine makes those files too, before it.
        let mut targets: HashMap<Key, Vec<(Key, usize)>> = HashMap::new();
        for (k, file) in &objects {
            let want = file.engine_targets();
            if want.is_empty() || !in_engine(k) {
                continue;
            }
            let mut who: Vec<usize> = holders.get(k).into_iter().flatten().copied().collect();
            who.sort_unstable();
            let found = who.iter().find_map(|&i| {
                want.iter()
                    .map(|&n| resolve(&tree.tasks[i], n))
                    .collect::<Option<Vec<_>>>()
            });
            match found {
                Some(v) => {
                    targets.insert(*k, v);
                }
                None => {
                    let i = who.first().copied().unwrap_or(0);
                    return Err(RestoreError::SharedEpollTarget {
                        pid: tree.tasks[i].pid,
                        fd: want.first().copied().unwrap_or(-1),
                    });
                }
            }
        }
        for (k, v) in flight {
            targets.entry(k).or_default().extend(v);
        }
        let graph = Graph {
            objects: &objects,
            key_of_file: &key_of_file,
            targets: &targets,
        };
        let mut made: HashMap<Key, Vec<i32>> = HashMap::new();
        for (_, t) in tree.alive() {
            for f in &t.fds {
                let Some((k, _)) = key_of(&f.source, f.file_id) else {
                    continue;
                };
                if in_engine(&k) {
                    out.make_with_deps(k, &graph, &mut made, floor, &mut Vec::new())?;
                }
            }
        }
        for (i, t) in tree.alive() {
            for f in &t.fds {
                let Some((k, file)) = key_of(&f.source, f.file_id) else {
                    continue;
                };
                if let Some(ends) = made.get(&k) {
                    let from = ends.get(file.end()).or(ends.first());
                    if let Some(&from) = from {
                        out.fds[i].insert(f.fd, from);
                    }
                }
            }
        }
        out.fd_floor = out
            .owned
            .iter()
            .chain(out.late.iter().map(|l| &l.fd))
            .map(|f| f.as_raw_fd() + 1)
            .max()
            .unwrap_or(floor)
            .max(floor);
        out.shared_memory(tree)?;
        Ok(out)
    }

    /// Makes object `k` in the engine (once), after the objects of the file ids it needs
    /// ([`RestoreFile::after_files`]); `path` holds the objects being made, to refuse a loop.
    fn make_with_deps(
        &mut self,
        k: Key,
        g: &Graph<'_>,
        made: &mut HashMap<Key, Vec<i32>>,
        min: i32,
        path: &mut Vec<Key>,
    ) -> Result<(), RestoreError> {
        if made.contains_key(&k) {
            return Ok(());
        }
        let Some(file) = g.objects.get(&k) else {
            return Ok(());
        };
        if path.contains(&k) {
            return Err(RestoreError::SelfDependent {
                kind: kind_name(file.fd_type()),
            });
        }
        path.push(k);
        for id in file.after_files() {
            if let Some(&dep) = g.key_of_file.get(id) {
                self.make_with_deps(dep, g, made, min, path)?;
            }
        }
        for &(dep, _) in g.targets.get(&k).into_iter().flatten() {
            self.make_with_deps(dep, g, made, min, path)?;
        }
        path.pop();
        if file.needs_tree() {
            // A placeholder for now, at the number the tasks will take the file from.
            // SAFETY: open with a NUL-terminated literal path.
            let ph = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            if ph < 0 {
                return Err(sys("opening a placeholder for a file of the tree"));
            }
            let fd = dup_at_least(owned(ph), min)?;
            made.insert(k, vec![fd.as_raw_fd()]);
            self.late.push(Late {
                fd,
                file: Arc::clone(file),
            });
            return Ok(());
        }
        let files = match g.targets.get(&k) {
            Some(t) => {
                let fds: Vec<i32> = t
                    .iter()
                    .filter_map(|(dep, end)| {
                        let e = made.get(dep)?;
                        e.get(*end).or(e.first()).copied()
                    })
                    .collect();
                file.make_in_engine_with(&fds)?
            }
            None => file.make_in_engine()?,
        };
        self.after.push(Arc::clone(file));
        let mut ends = Vec::new();
        for fd in files {
            let fd = dup_at_least(fd, min)?;
            ends.push(fd.as_raw_fd());
            self.owned.push(fd);
        }
        made.insert(k, ends);
        Ok(())
    }

    /// The engine's descriptors of [`Shared::late`] files.
    pub fn late_fds(&self) -> HashSet<i32> {
        self.late.iter().map(|l| l.fd.as_raw_fd()).collect()
    }

    /// Maps and fills every shared anonymous object that more than one task maps.
    fn shared_memory(&mut self, tree: &TreePlan) -> Result<(), RestoreError> {
        let mut users: HashMap<u64, (HashSet<usize>, u64)> = HashMap::new();
        for (i, t) in tree.alive() {
            for v in &t.vmas {
                if let VmaKind::AnonShared { shmid } = v.kind {
                    let e = users.entry(shmid).or_default();
                    e.0.insert(i);
                    e.1 = e.1.max(v.pgoff + v.len());
                }
            }
        }
        let mut ids: Vec<u64> = users
            .iter()
            .filter(|(_, (who, _))| who.len() > 1)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        // Hugetlb memory cannot be mapped again from one object (`mremap` of size 0).
        for (_, t) in tree.alive() {
            if let Some(v) = t.vmas.iter().find(|v| {
                v.flags & libc::MAP_HUGETLB != 0
                    && matches!(v.kind, VmaKind::AnonShared { shmid } if ids.contains(&shmid))
            }) {
                return Err(RestoreError::Vma {
                    what: "shared anonymous hugetlb memory mapped by several processes",
                    start: v.start,
                });
            }
        }
        for shmid in ids {
            let size = page_up(users[&shmid].1);
            // SAFETY: a fresh shared anonymous mapping wherever the kernel likes.
            let a = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    size as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if a == libc::MAP_FAILED {
                return Err(sys("mapping shared anonymous memory"));
            }
            self.maps.push((a as u64, size));
            self.shm.insert(shmid, a as u64);
            self.fill(tree, shmid, a as u64, size)?;
        }
        Ok(())
    }

    /// Reads the saved pages of object `shmid` into its mapping at `base`.
    fn fill(&self, tree: &TreePlan, shmid: u64, base: u64, size: u64) -> Result<(), RestoreError> {
        // Pages of the object already read (several tasks' runs cover the same pages).
        let mut filled = vec![false; (size / PAGE) as usize];
        let mut files: HashMap<std::path::PathBuf, std::fs::File> = HashMap::new();
        for (_, t) in tree.alive() {
            for v in &t.vmas {
                if v.kind != (VmaKind::AnonShared { shmid }) {
                    continue;
                }
                for run in &t.pages {
                    let a = run.vaddr.max(v.start);
                    let b = (run.vaddr + run.nr_pages * PAGE).min(v.end);
                    if a >= b {
                        continue;
                    }
                    let path = &t.page_files[run.file];
                    if !files.contains_key(path) {
                        let f = std::os::unix::fs::OpenOptionsExt::custom_flags(
                            std::fs::File::options().read(true),
                            libc::O_NOFOLLOW,
                        )
                        .open(path)
                        .map_err(|e| RestoreError::Io {
                            what: format!("opening {}", path.display()),
                            error: e,
                        })?;
                        files.insert(path.clone(), f);
                    }
                    // Each stretch of pages of [a, b) not read yet, in one read.
                    let mut page = a;
                    while page < b {
                        let first = ((v.pgoff + (page - v.start)) / PAGE) as usize;
                        if filled.get(first).is_none_or(|f| *f) {
                            page += PAGE;
                            continue;
                        }
                        let mut end = page;
                        while end < b {
                            let k = ((v.pgoff + (end - v.start)) / PAGE) as usize;
                            match filled.get_mut(k) {
                                Some(f) if !*f => *f = true,
                                _ => break,
                            }
                            end += PAGE;
                        }
                        let obj_off = v.pgoff + (page - v.start);
                        // SAFETY: [obj_off, obj_off + (end - page)) are pages of the object
                        // (checked against `filled`, sized by it), mapped readable and
                        // writable above and ours alone until the tasks are created.
                        let dst = unsafe {
                            std::slice::from_raw_parts_mut(
                                (base + obj_off) as *mut u8,
                                (end - page) as usize,
                            )
                        };
                        let off = run.offset + (page - run.vaddr);
                        std::os::unix::fs::FileExt::read_exact_at(&files[path], dst, off).map_err(
                            |e| RestoreError::Io {
                                what: format!("reading shared memory from {}", path.display()),
                                error: e,
                            },
                        )?;
                        page = end;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Up to `n` pids that are free and that the tree does not need, from the top of the pid range
/// down, for the helpers that share big fills: a pid there is handed out by the kernel only
/// when it wraps around, so a helper neither takes a pid the tree needs nor races another
/// process for one.
pub fn helper_pids(tree: &TreePlan, n: usize) -> Vec<i32> {
    let max: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    let taken: HashSet<i32> = tree.all_ids().collect();
    (300..max)
        .rev()
        .filter(|p| !taken.contains(p) && !std::path::Path::new(&format!("/proc/{p}")).exists())
        .take(n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::pipe::PipeEnd;
    use crate::restore::plan::{Fd, TaskPlan};

    #[test]
    fn a_pipe_two_tasks_hold_is_made_once_with_an_fd_per_end() {
        let end = |write| {
            FdSource::File(Arc::new(PipeEnd {
                id: 5,
                write,
                flags: 0,
                data: b"queued".to_vec(),
                size: 0,
            }))
        };
        let task = |pid, fds: Vec<(i32, u32, bool)>| TaskPlan {
            pid,
            fds: fds
                .into_iter()
                .map(|(fd, file_id, write)| Fd {
                    fd,
                    file_id,
                    cloexec: false,
                    source: end(write),
                    status: None,
                })
                .collect(),
            ..TaskPlan::default()
        };
        // The parent reads at fd 3; the child writes at fd 4 and also holds the read end at 5.
        let tree = TreePlan {
            tasks: vec![
                task(100, vec![(3, 1, false)]),
                task(101, vec![(4, 2, true), (5, 1, false)]),
            ],
            parent: vec![None, Some(0)],
            children: vec![vec![1], vec![]],
            order: vec![0, 1],
        };
        let shared = Shared::build(&tree).unwrap();
        let (r, w) = (shared.fds[0][&3], shared.fds[1][&4]);
        assert_eq!(shared.fds[1][&5], r, "one read end for both tasks");
        assert_ne!(r, w);
        assert!(
            r > 5 && w > 5 && shared.fd_floor > r.max(w),
            "above every task fd"
        );
        // The saved bytes were put back, and the ends are connected.
        let mut buf = [0u8; 16];
        // SAFETY: reads from the engine's read end into a live local buffer.
        let n = unsafe { libc::read(r, buf.as_mut_ptr().cast(), buf.len()) };
        assert_eq!(&buf[..n as usize], b"queued");
        // SAFETY: writes a live local buffer to the engine's write end.
        assert_eq!(unsafe { libc::write(w, b"x".as_ptr().cast(), 1) }, 1);
        // SAFETY: reads from the engine's read end into a live local buffer.
        let n = unsafe { libc::read(r, buf.as_mut_ptr().cast(), buf.len()) };
        assert_eq!(&buf[..n as usize], b"x");
    }
}
