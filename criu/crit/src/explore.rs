//! `crit x DIR ps|fds|mems|rss`: views of a whole image directory, in the layout of CRIU's crit.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use criu_images::json::quopri_encode;
use criu_images::pb::{FdTypes, FileEntry, PipeEntry, RegFileEntry, UnixSkEntry};
use criu_images::vma::status;
use criu_images::{ImageDir, magic, names, read_all};

const MAP_GROWSDOWN: u32 = 0x100;

/// An image directory being explored, with the file tables loaded on demand.
pub struct Explorer {
    dir: ImageDir,
    files: RefCell<Option<Vec<FileEntry>>>,
    cache: RefCell<HashMap<(i32, u32), String>>,
}

impl Explorer {
    /// Explores `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: ImageDir::new(dir),
            files: RefCell::new(None),
            cache: RefCell::new(HashMap::new()),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.file(name)
    }

    /// `files.img` entries (empty when the image is absent, as in old layouts).
    fn files(&self) -> Vec<FileEntry> {
        let mut f = self.files.borrow_mut();
        f.get_or_insert_with(|| self.dir.read_files().unwrap_or_default())
            .clone()
    }

    fn file_str(&self, ty: i32, id: u32) -> Result<String> {
        if let Some(s) = self.cache.borrow().get(&(ty, id)) {
            return Ok(s.clone());
        }
        let files = self.files();
        let in_files = files.iter().find(|f| f.id == id);
        let s = match FdTypes::try_from(ty) {
            Ok(FdTypes::Reg) => {
                let rf = match in_files {
                    Some(f) => f.reg.clone(),
                    None if files.is_empty() => {
                        read_all::<RegFileEntry>(self.path(names::REG_FILES), magic::REG_FILES)?
                            .into_iter()
                            .find(|r| r.id == id)
                    }
                    None => None,
                };
                rf.map(|r| r.name)
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "unknown path".into())
            }
            Ok(FdTypes::Pipe) => {
                let p = match in_files {
                    Some(f) => f.pipe.clone(),
                    None if files.is_empty() => {
                        read_all::<PipeEntry>(self.path("pipes.img"), magic::PIPES)?
                            .into_iter()
                            .find(|p| p.id == id)
                    }
                    None => None,
                };
                p.map_or_else(|| "pipe[?]".into(), |p| format!("pipe[{}]", p.pipe_id))
            }
            Ok(FdTypes::Unixsk) => {
                let u = match in_files {
                    Some(f) => f.usk.clone(),
                    None if files.is_empty() => {
                        read_all::<UnixSkEntry>(self.path("unixsk.img"), magic::UNIXSK)?
                            .into_iter()
                            .find(|u| u.id == id)
                    }
                    None => None,
                };
                match u {
                    None => "unix[?]".into(),
                    Some(u) => {
                        let name = quopri_encode(&u.name);
                        let n = if name.is_empty() {
                            String::new()
                        } else {
                            format!(" {name}")
                        };
                        format!("unix[{} ({}){n}]", u.ino, u.peer)
                    }
                }
            }
            Ok(t) => format!("{}.{id}", t.as_str_name()),
            Err(_) => format!("{ty}.{id}"),
        };
        self.cache.borrow_mut().insert((ty, id), s.clone());
        Ok(s)
    }

    /// Whether the task was a zombie when dumped: its core image says `TASK_DEAD` (2; CRIU's
    /// crit has names for the values 1, 3 and 6 only) and it has no ids, mm, pagemap or fs
    /// images, so the per-task listings skip it.
    fn is_zombie(&self, pid: u32) -> Result<bool> {
        const TASK_DEAD: u32 = 2;
        Ok(self
            .dir
            .read_core(pid)?
            .tc
            .is_some_and(|t| t.task_state == TASK_DEAD))
    }

    /// The process tree: pid, pgid, sid and comm, children indented under their parent.
    ///
    /// # Errors
    /// Unreadable images; a tree without a root or with a missing parent.
    pub fn ps(&self, out: &mut dyn Write) -> Result<()> {
        let tree = self.dir.read_pstree()?;
        let mut comms = HashMap::new();
        for p in &tree {
            let core = self.dir.read_core(p.pid)?;
            comms.insert(p.pid, core.tc.map(|t| t.comm).unwrap_or_default());
        }
        let mut kids: HashMap<u32, Vec<usize>> = HashMap::new();
        let mut root = None;
        for (i, p) in tree.iter().enumerate() {
            if p.ppid == 0 {
                root = Some(i);
                continue;
            }
            if !tree.iter().any(|q| q.pid == p.ppid) {
                bail!(
                    "{}: task {} has parent {} that is not in the tree",
                    self.path(names::PSTREE).display(),
                    p.pid,
                    p.ppid
                );
            }
            kids.entry(p.ppid).or_default().push(i);
        }
        let Some(root) = root else {
            bail!(
                "{}: no root task (ppid 0)",
                self.path(names::PSTREE).display()
            );
        };
        writeln!(out, "{:>7}{:>7}{:>7}   COMM", "PID", "PGID", "SID")?;
        let mut stack = vec![(root, 0usize)];
        while let Some((i, depth)) = stack.pop() {
            let p = &tree[i];
            writeln!(
                out,
                "{:>7}{:>7}{:>7}   {}{}",
                p.pid,
                p.pgid,
                p.sid,
                " ".repeat(4 * depth),
                comms[&p.pid]
            )?;
            for &k in kids
                .get(&p.pid)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .rev()
            {
                if k != i {
                    stack.push((k, depth + 1));
                }
            }
        }
        Ok(())
    }

    /// Each task's descriptors with what they point to, then its cwd and root.
    ///
    /// # Errors
    /// Unreadable images.
    pub fn fds(&self, out: &mut dyn Write) -> Result<()> {
        for p in self.dir.read_pstree()? {
            if self.is_zombie(p.pid)? {
                continue;
            }
            let ids = self.dir.read_ids(p.pid)?;
            let fds = self.dir.read_fdinfo(ids.files_id)?;
            writeln!(out, "{}", p.pid)?;
            for fd in fds {
                writeln!(out, "\t{:>7}: {}", fd.fd, self.file_str(fd.r#type, fd.id)?)?;
            }
            let fs = self.dir.read_fs(p.pid)?;
            writeln!(
                out,
                "\t{:>7}: {}",
                "cwd",
                self.file_str(FdTypes::Reg as i32, fs.cwd_id)?
            )?;
            writeln!(
                out,
                "\t{:>7}: {}",
                "root",
                self.file_str(FdTypes::Reg as i32, fs.root_id)?
            )?;
        }
        Ok(())
    }

    /// Each task's executable and memory areas with protection and backing.
    ///
    /// # Errors
    /// Unreadable images.
    pub fn mems(&self, out: &mut dyn Write) -> Result<()> {
        let mut vids: HashMap<u64, u64> = HashMap::new();
        let mut vid = |shmid: u64| {
            let n = vids.len() as u64 + 1;
            *vids.entry(shmid).or_insert(n)
        };
        for p in self.dir.read_pstree()? {
            if self.is_zombie(p.pid)? {
                continue;
            }
            let mm = self.dir.read_mm(p.pid)?;
            writeln!(out, "{}", p.pid)?;
            writeln!(
                out,
                "\t{:<36}    {}",
                "exe",
                self.file_str(FdTypes::Reg as i32, mm.exe_file_id)?
            )?;
            for vma in &mm.vmas {
                let st = vma.status;
                let mut f = if st & status::SYSVIPC != 0 {
                    format!(" ips[{:x}]", vid(vma.shmid))
                } else if st & status::ANON_SHARED != 0 {
                    format!(" shmem[{:x}]", vid(vma.shmid))
                } else if st & status::SOCKET != 0 {
                    format!(" packet[{:x}]", vid(vma.shmid))
                } else if st & (status::FILE_PRIVATE | status::FILE_SHARED) != 0 {
                    let id = u32::try_from(vma.shmid)
                        .context("file id of a file mapping out of range")?;
                    let mut s = format!(" {}", self.file_str(FdTypes::Reg as i32, id)?);
                    if vma.pgoff != 0 {
                        s += &format!(" + {:#x}", vma.pgoff);
                    }
                    if st & status::FILE_SHARED != 0 {
                        s += " (s)";
                    }
                    s
                } else if st & status::STACK != 0 {
                    " [stack]".into()
                } else if st & status::VSYSCALL != 0 {
                    " [vsyscall]".into()
                } else if st & status::VDSO != 0 {
                    " [vdso]".into()
                } else if vma.flags & MAP_GROWSDOWN != 0 {
                    " [stack?]".into()
                } else {
                    String::new()
                };
                if st & status::REGULAR == 0 {
                    f += " *";
                }
                let prot: String = [(1, 'r'), (2, 'w'), (4, 'x')]
                    .iter()
                    .map(|&(b, c)| if vma.prot & b != 0 { c } else { '-' })
                    .collect();
                let a = format!("{:08x}-{:08x}", vma.start, vma.end);
                writeln!(out, "\t{a:<36}{prot}{f}")?;
            }
        }
        Ok(())
    }

    /// Each task's saved page runs, next to the memory areas they fall in.
    ///
    /// # Errors
    /// Unreadable images.
    pub fn rss(&self, out: &mut dyn Write) -> Result<()> {
        for p in self.dir.read_pstree()? {
            if self.is_zombie(p.pid)? {
                continue;
            }
            let vmas = self.dir.read_mm(p.pid)?.vmas;
            let pm = self.dir.read_pagemap(p.pid)?;
            writeln!(out, "{}", p.pid)?;
            let mut vmi: usize = 0;
            let mut pvmi: Option<usize> = None;
            for e in &pm.entries {
                let pstr = format!("\t{:x} / {:<8}", e.vaddr, e.pages());
                while vmi < vmas.len() && vmas[vmi].end <= e.vaddr {
                    vmi += 1;
                }
                let pme = e.vaddr.saturating_add(e.pages().saturating_mul(4096));
                let mut vstr = String::new();
                while vmi < vmas.len() && vmas[vmi].start < pme {
                    let vma = &vmas[vmi];
                    if pvmi == Some(vmi) {
                        vstr += " ~";
                    } else {
                        vstr += &format!(
                            " {:08x} / {:<8}",
                            vma.start,
                            (vma.end.saturating_sub(vma.start)) >> 12
                        );
                        if vma.status & (status::FILE_PRIVATE | status::FILE_SHARED) != 0 {
                            let id = u32::try_from(vma.shmid)
                                .context("file id of a file mapping out of range")?;
                            vstr += &format!(" {}", self.file_str(FdTypes::Reg as i32, id)?);
                        }
                        pvmi = Some(vmi);
                    }
                    vstr += &format!("\n\t{:23}", "");
                    vmi += 1;
                }
                vmi = vmi.saturating_sub(1);
                writeln!(out, "{pstr:<24}{vstr}")?;
            }
        }
        Ok(())
    }
}
