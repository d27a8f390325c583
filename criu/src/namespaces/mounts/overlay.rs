//! overlayfs mounts: made again with their layers (`lowerdir`, `upperdir`, `workdir` in the
//! superblock options, as the kernel shows the paths it was given).
//!
//! A layer path is what the mounter wrote: a path in the tree's mount namespace (an overlay
//! mounted after the tree's root was pivoted; at restore it is found under the yard the
//! namespace is rebuilt in, once the mount holding it is made) or a path of the host's (an
//! overlay mounted by a runtime, outside, with its layers on the host's disk; found there).
//! The dump refuses a layer reachable neither way; the restore takes the namespace's path
//! first. Pure: no system call here but the existence checks the callers pass in.

use super::mountinfo::unescape;

/// CRIU's `fstype` code of overlayfs.
pub const OVERLAY: u32 = 17;

/// The option keys whose values are layer paths, and whether the value is a `:` list.
const KEYS: [(&str, bool); 3] = [("lowerdir", true), ("upperdir", false), ("workdir", false)];

/// Splits a `lowerdir` value on the `:` that are not escaped (`\:`).
fn split_list(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    if n != ':' {
                        cur.push('\\');
                    }
                    cur.push(n);
                }
            }
            ':' => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

/// The layer paths of overlay superblock options `options`, octal escapes undone.
pub fn layers(options: &str) -> Vec<String> {
    let mut out = Vec::new();
    for o in options.split(',') {
        let Some((k, v)) = o.split_once('=') else {
            continue;
        };
        let Some((_, list)) = KEYS.iter().find(|(key, _)| *key == k) else {
            continue;
        };
        let v = unescape(v);
        if *list {
            out.extend(split_list(&v));
        } else {
            out.push(v);
        }
    }
    out
}

/// `options` with each layer path replaced by what `map` makes of it (the first error of
/// `map` is returned).
pub fn rewrite<E>(
    options: &str,
    mut map: impl FnMut(&str) -> Result<String, E>,
) -> Result<String, E> {
    let mut out = Vec::new();
    for o in options.split(',') {
        let kv = o.split_once('=');
        match kv.and_then(|(k, v)| Some((k, v, KEYS.iter().find(|(key, _)| *key == k)?.1))) {
            Some((k, v, list)) => {
                let v = unescape(v);
                let parts = if list { split_list(&v) } else { vec![v] };
                let mut mapped = Vec::new();
                for p in &parts {
                    mapped.push(map(p)?.replace(':', "\\:"));
                }
                out.push(format!("{k}={}", mapped.join(":")));
            }
            None => out.push(o.to_string()),
        }
    }
    Ok(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_parse_and_rewrite() {
        let o = "lowerdir=/l1:/l\\:2:/a\\040b,upperdir=/data/up,workdir=/data/w,redirect_dir=on";
        assert_eq!(layers(o), ["/l1", "/l:2", "/a b", "/data/up", "/data/w"]);
        let r: Result<String, ()> = rewrite(o, |p| Ok(format!("/y{p}")));
        assert_eq!(
            r.unwrap(),
            "lowerdir=/y/l1:/y/l\\:2:/y/a b,upperdir=/y/data/up,workdir=/y/data/w,redirect_dir=on"
        );
        let e: Result<String, &str> = rewrite(o, |_| Err("no"));
        assert_eq!(e, Err("no"));
        assert!(layers("size=4k,mode=755").is_empty());
    }
}
