//! The live-migration requests: `PRE_DUMP` / `SINGLE_PRE_DUMP` (a pre-dump, the tree left
//! running; a `PRE_DUMP` session stays open for the next pre-dump or the final `DUMP`, as
//! CRIU's does) and `PAGE_SERVER` / `PAGE_SERVER_CHLD` (a page server started in the
//! background, its pid and port answered).

use criu_images::pb::{CriuDumpResp, CriuOpts, CriuPageServerInfo, CriuReqType, CriuResp};

use super::super::opts::{Mode, to_options};
use super::{Failure, Who, chain, fail, may_use_dirs, options_failure, resp, who, with_run};
use crate::options::{Command, DumpOptions};
use crate::scripts::{Notify, ScriptAction, ScriptError};

pub(super) fn pre_dump(
    ty: CriuReqType,
    req: &CriuOpts,
    mode: Mode,
    peer: i32,
    client: &Who,
) -> CriuResp {
    let result = to_options(req, Command::PreDump, mode, peer)
        .map_err(Failure::from)
        .and_then(|mut opts| {
            let c = who(client)?;
            may_use_dirs(c, &opts, libc::W_OK | libc::X_OK, "write images to")?;
            c.may_dump(opts.tree.unwrap_or(peer))?;
            with_run(&mut opts, |o, _| {
                let mut dopts = DumpOptions::from_options(o);
                // A pre-dump always tracks memory, as CRIU's.
                dopts.track_mem = true;
                dopts.validate().map_err(options_failure)?;
                let r = crate::dump::pre_dump(&dopts)
                    .map_err(|e| Failure::new(Some(e.errno()), chain(&e)))?;
                if o.display_stats {
                    crate::stats::show(&dopts.images_dir, crate::stats::Kind::Dump);
                }
                Ok(r)
            })
        });
    let mut r = match result {
        Ok(_) => resp(ty, true),
        Err(f) => fail(ty, f),
    };
    r.dump = Some(CriuDumpResp {
        restored: Some(false),
    });
    r
}

pub(super) fn page_server(
    ty: CriuReqType,
    req: &CriuOpts,
    mode: Mode,
    peer: i32,
    client: &Who,
    notifier: Option<&dyn Notify>,
) -> CriuResp {
    let result = to_options(req, Command::PageServer, mode, peer)
        .map_err(Failure::from)
        .and_then(|mut opts| {
            let c = who(client)?;
            may_use_dirs(c, &opts, libc::W_OK | libc::X_OK, "write images to")?;
            if !c.privileged() {
                return Err(Failure::new(
                    Some(libc::EPERM),
                    "a page server writes images as root: only a privileged client may start one",
                ));
            }
            with_run(&mut opts, |o, _| {
                let so = crate::pageserver::ServerOptions {
                    dir: o.images_dir.path(),
                    address: o.live.address.clone(),
                    port: o.live.port.unwrap_or(0),
                    daemon: true,
                    status_fd: o.status_fd,
                    pidfile: None,
                    prev_images_dir: o.prev_images_dir.clone(),
                    lazy: o.live.lazy_pages,
                    tls: o.live.tls.clone(),
                };
                // `status-ready` goes to the client before the answer (CRIU's background
                // server sends it from there, racing the answer on the same socket).
                let quiet = |_: ScriptAction, _: Option<i32>| -> Result<(), ScriptError> { Ok(()) };
                let ready: &dyn Notify = match notifier {
                    Some(n) => n,
                    None => &quiet,
                };
                match crate::pageserver::run_page_server_with(&so, ready) {
                    Ok(Some(started)) => Ok(started),
                    Ok(None) => Err(Failure::new(Some(libc::EINVAL), "page server not started")),
                    Err(e) => Err(Failure::new(Some(e.errno()), chain(&e))),
                }
            })
        });
    match result {
        Ok((pid, port)) => {
            let mut r = resp(ty, true);
            r.ps = Some(CriuPageServerInfo {
                address: None,
                port: Some(i32::from(port)),
                pid: Some(pid),
                fd: None,
            });
            r
        }
        Err(f) => fail(ty, f),
    }
}
