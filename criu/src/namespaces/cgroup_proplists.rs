//! The cgroup properties a dump saves: CRIU's built-in lists per v1 controller, the
//! hierarchy-wide ones, the v2 limits CRIU does not save, the ones written in a special way, and
//! the `--cgroup-props`/`--cgroup-props-file` descriptions that replace or extend the lists
//! (CRIU's YAML-like format, parsed here). Used by [`super::cgroup_props`].

use std::collections::BTreeMap;

use super::{Kind, NsError};
use crate::options::CgroupPropsOpts;

const K: Kind = Kind::Cgroup;

/// CRIU's built-in property lists, per v1 controller, in the order they are restored.
const BUILTIN: &[(&str, &[&str])] = &[
    (
        "cpu",
        &[
            "cpu.shares",
            "cpu.cfs_period_us",
            "cpu.cfs_quota_us",
            "cpu.rt_period_us",
            "cpu.rt_runtime_us",
        ],
    ),
    (
        "memory",
        &[
            "memory.limit_in_bytes",
            "memory.memsw.limit_in_bytes",
            "memory.swappiness",
            "memory.soft_limit_in_bytes",
            "memory.move_charge_at_immigrate",
            "memory.oom_control",
            "memory.use_hierarchy",
            "memory.kmem.limit_in_bytes",
            "memory.kmem.tcp.limit_in_bytes",
        ],
    ),
    (
        "cpuset",
        &[
            "cpuset.cpus",
            "cpuset.mems",
            "cpuset.memory_migrate",
            "cpuset.cpu_exclusive",
            "cpuset.mem_exclusive",
            "cpuset.mem_hardwall",
            "cpuset.memory_spread_page",
            "cpuset.memory_spread_slab",
            "cpuset.sched_load_balance",
            "cpuset.sched_relax_domain_level",
        ],
    ),
    ("blkio", &["blkio.weight"]),
    ("freezer", &[]),
    ("perf_event", &[]),
    ("net_cls", &["net_cls.classid"]),
    ("net_prio", &["net_prio.ifpriomap"]),
    ("pids", &["pids.max"]),
    ("devices", &["devices.list"]),
];

/// Every v1 hierarchy's own properties (`cgroup.procs` and `tasks` for their owner and mode).
pub(crate) const GLOBAL_V1: &[&str] = &[
    "cgroup.clone_children",
    "notify_on_release",
    "cgroup.procs",
    "tasks",
];

/// The v2 hierarchy's own properties (CRIU's list).
pub(crate) const GLOBAL_V2: &[&str] = &[
    "cgroup.subtree_control",
    "cgroup.max.descendants",
    "cgroup.max.depth",
    "cgroup.freeze",
    "cgroup.type",
];

/// The v2 controllers' limits, saved where the files exist (ours; CRIU saves none).
pub(crate) const V2_LIMITS: &[&str] = &[
    "cpuset.cpus",
    "cpuset.mems",
    "cpu.weight",
    "cpu.max",
    "memory.min",
    "memory.low",
    "memory.high",
    "memory.max",
    "memory.swap.max",
    "pids.max",
    "io.weight",
];

/// Properties set right when their directory is made, before any task or child enters.
pub(crate) const SPECIAL: &[&str] = &[
    "cpuset.cpus",
    "cpuset.mems",
    "devices.list",
    "memory.kmem.limit_in_bytes",
    "memory.swappiness",
    "memory.oom_control",
    "memory.use_hierarchy",
    "cgroup.type",
];

/// Which properties each controller's directories save.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PropLists(BTreeMap<String, Vec<String>>);

impl PropLists {
    /// CRIU's built-in lists.
    pub(crate) fn builtin() -> PropLists {
        PropLists(
            BUILTIN
                .iter()
                .map(|(c, p)| (c.to_string(), p.iter().map(|s| s.to_string()).collect()))
                .collect(),
        )
    }

    /// The built-in lists changed by `--cgroup-props` and then `--cgroup-props-file`.
    ///
    /// # Errors
    /// [`NsError::BadImage`] naming the option for a malformed description, [`NsError::Io`]
    /// for a file that cannot be read.
    pub(crate) fn from_options(o: &CgroupPropsOpts) -> Result<PropLists, NsError> {
        let mut l = PropLists::builtin();
        if let Some(s) = &o.inline {
            l.apply(s)
                .map_err(|r| NsError::bad(K, "--cgroup-props", r))?;
        }
        if let Some(f) = &o.file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| NsError::io(K, format!("reading {}", f.display()), e))?;
            l.apply(&text)
                .map_err(|r| NsError::bad(K, f.display().to_string(), r))?;
        }
        Ok(l)
    }

    /// Applies a description in CRIU's format (each controller quoted, a strategy `merge`
    /// or `replace`, a list of properties):
    ///
    /// ```text
    /// "cpu":
    ///  - "strategy": "replace"
    ///  - "properties": ["cpu.shares", "cpu.cfs_period_us"]
    /// ```
    ///
    /// Layout (spaces and line breaks) is free.
    pub(crate) fn apply(&mut self, text: &str) -> Result<(), String> {
        let toks = tokens(text)?;
        let mut it = toks.iter().peekable();
        let word = |t: Option<&Tok>, what: &str| match t {
            Some(Tok::Str(s)) => Ok(s.clone()),
            other => Err(format!("expected {what}, found {}", shown(other))),
        };
        let punct = |t: Option<&Tok>, c: char| match t {
            Some(Tok::P(p)) if *p == c => Ok(()),
            other => Err(format!("expected '{c}', found {}", shown(other))),
        };
        while it.peek().is_some() {
            let ctl = word(it.next(), "a controller name")?;
            punct(it.next(), ':')?;
            punct(it.next(), '-')?;
            if word(it.next(), "\"strategy\"")? != "strategy" {
                return Err(format!("{ctl}: expected \"strategy\""));
            }
            punct(it.next(), ':')?;
            let strategy = word(it.next(), "a strategy")?;
            punct(it.next(), '-')?;
            if word(it.next(), "\"properties\"")? != "properties" {
                return Err(format!("{ctl}: expected \"properties\""));
            }
            punct(it.next(), ':')?;
            punct(it.next(), '[')?;
            let mut props = Vec::new();
            if matches!(it.peek(), Some(Tok::P(']'))) {
                it.next();
            } else {
                loop {
                    let p = word(it.next(), "a property name")?;
                    if p.contains('/') || p.starts_with('.') {
                        return Err(format!("{ctl}: property {p:?}"));
                    }
                    props.push(p);
                    match it.next() {
                        Some(Tok::P(',')) => {}
                        Some(Tok::P(']')) => break,
                        other => {
                            return Err(format!("expected ',' or ']', found {}", shown(other)));
                        }
                    }
                }
            }
            match strategy.as_str() {
                "replace" => {
                    self.0.insert(ctl, props);
                }
                "merge" => self.0.entry(ctl).or_default().extend(props),
                s => return Err(format!("{ctl}: unknown strategy {s:?}")),
            }
        }
        Ok(())
    }

    pub(crate) fn get(&self, controller: &str) -> &[String] {
        self.0.get(controller).map_or(&[], |v| v.as_slice())
    }
}

#[derive(Debug, PartialEq)]
enum Tok {
    Str(String),
    P(char),
}

fn shown(t: Option<&Tok>) -> String {
    match t {
        None => "the end".into(),
        Some(Tok::Str(s)) => format!("{s:?}"),
        Some(Tok::P(c)) => format!("'{c}'"),
    }
}

fn tokens(text: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some(c) => s.push(c),
                        None => return Err("unterminated quote".into()),
                    }
                }
                out.push(Tok::Str(s));
            }
            ':' | '-' | '[' | ']' | ',' => out.push(Tok::P(c)),
            c if c.is_whitespace() => {}
            c => return Err(format!("unexpected {c:?}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_replace_and_merge() {
        let mut l = PropLists::builtin();
        l.apply(
            "\"cpu\":\n - \"strategy\": \"replace\"\n - \"properties\": [\"cpu.shares\"]\n\
             \"pids\":\n - \"strategy\": \"merge\"\n - \"properties\": [ \"pids.x\" , \"pids.y\" ]\n\
             \"new\":\n - \"strategy\": \"merge\"\n - \"properties\": []\n",
        )
        .unwrap();
        assert_eq!(l.get("cpu"), ["cpu.shares"]);
        assert_eq!(l.get("pids"), ["pids.max", "pids.x", "pids.y"]);
        assert!(l.get("new").is_empty());
        for bad in [
            "\"cpu\"",
            "\"cpu\":\n - \"strategy\": \"swap\"\n - \"properties\": []",
            "\"cpu\":\n - \"strategy\": \"merge\"\n - \"properties\": [\"../x\"]",
            "\"cpu\":\n - \"strategy\": \"merge\"\n - \"properties\": [\"a\" \"b\"]",
            "cpu",
        ] {
            assert!(PropLists::builtin().apply(bad).is_err(), "{bad}");
        }
    }
}
