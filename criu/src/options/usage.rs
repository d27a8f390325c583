//! The text `criu --help` prints.

/// The usage text `criu --help` prints.
pub const USAGE: &str = "\
Usage:
  criu dump|pre-dump -t PID [<options>]
  criu restore [<options>]
  criu check [--feature FEAT]
  criu cpuinfo dump|check
  criu service [--address PATH] | criu swrk FD

Commands:
  dump           checkpoint a process tree identified by pid
  restore        restore a process tree
  check          checks whether the kernel supports what criu needs
  cpuinfo        dump this CPU's description, or check an image's against it
  lazy-pages     serve the memory of a restore with --lazy-pages
  dedup          punch the pages a dump holds out of its parent images
  service        serve RPC requests on a unix socket
  swrk           serve one RPC client on an inherited socket

Options:
  -t|--tree PID         checkpoint the process tree rooted at PID
  -D|--images-dir DIR   directory for image files (default .)
  -W|--work-dir DIR     directory to cd into and to write logs and pidfiles in
  -o|--log-file FILE    log file name (relative to the work dir)
  -v[v...]|-vNUM|--verbosity=NUM
                        verbosity: 0 messages, 1 errors, 2 warnings (default),
                        3 info, 4 debug
  -R|--leave-running    leave the dumped tasks running
  -s|--leave-stopped    leave the dumped tasks stopped
  -d|--restore-detached detach from the restored tasks
  --exec-cmd -- CMD...  restore: once the tree runs, become CMD (the restored
                        root's parent); not with -d
  -j|--shell-job        allow a process attached to the caller's terminal
  --orphan-pts-master   a pty slave whose master is outside the tree gets a new
                        master, passed to the orphan-pts-master action script
                        (as its stdin) or to the RPC client
  --pidfile FILE        write the restored root task's pid to FILE
  --action-script FILE  run FILE at each stage (repeatable)
  --timeout SECONDS     how long freezing may take (default 10)
  --cpu-cap[=CAPS]      restore: with none, leave out saved register state this
                        CPU has no registers for instead of refusing
  --config FILE         read options from FILE (no default config files then)
  --no-default-config   do not read /etc/criu/default.conf and ~/.criu/default.conf
  --feature NAME        with check: check one kernel feature
  --display-stats       print the dump's or restore's statistics at the end
  -h|--help             show this text
  -V|--version          show the version
";
