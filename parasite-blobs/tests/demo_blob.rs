//! The compiled-in demo blob (the module build.rs generated) placed in this process at a fresh
//! address and run in trap mode: one command, result in the init header.

use compel_proto::blob::{BLOB_PAGE_SIZE, BlobDesc};
use compel_proto::rpc::{ARGS_PAYLOAD_OFFSET, CMD_PING, MODE_TRAP, ParasiteInit};
use compel_proto::{read_plain, write_plain};
use parasite_blobs::demo;

/// A blob placed and relocated in an anonymous mapping of this process, unmapped on drop.
struct Placed {
    base: usize,
    size: usize,
}

impl Placed {
    fn new(blob: &BlobDesc<'_>) -> Placed {
        let size = blob.map_size();
        // SAFETY: a fresh private mapping at an address the kernel picks replaces nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let base = p as usize;
        // SAFETY: [base, base + size) is the mapping made above, only ours.
        let mem = unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), size) };
        blob.copy_into(mem).unwrap();
        blob.apply_relocs(mem, base as u64).unwrap();
        let text = blob.text_size.div_ceil(BLOB_PAGE_SIZE) * BLOB_PAGE_SIZE;
        // SAFETY: the text part of our own mapping; nothing writes it any more.
        let r = unsafe { libc::mprotect(p, text, libc::PROT_READ | libc::PROT_EXEC) };
        assert_eq!(r, 0);
        Placed { base, size }
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        // SAFETY: our mapping; the functions called in it have returned.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.size) };
    }
}

/// Runs `cmd` in trap mode with `payload`; returns `trap_ret` and the payload afterwards.
fn trap(placed: &Placed, cmd: u32, payload: &[u8]) -> (i32, Vec<u8>) {
    let mut area = vec![0u64; (ARGS_PAYLOAD_OFFSET + 8192) / 8];
    // SAFETY: u64 words viewed as bytes: no padding, any bit pattern is valid.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(area.as_mut_ptr().cast::<u8>(), area.len() * 8) };
    let mut init = ParasiteInit::new();
    init.mode = MODE_TRAP;
    init.trap_cmd = cmd;
    init.trap_ret = 12345;
    init.payload_size = 8192;
    assert!(write_plain(bytes, &init));
    bytes[ARGS_PAYLOAD_OFFSET..ARGS_PAYLOAD_OFFSET + payload.len()].copy_from_slice(payload);
    type Main = unsafe extern "C" fn(*mut u8) -> u64;
    // SAFETY: SYM_PARASITE_MAIN is the placed, relocated blob's `__export_parasite_main`.
    let main: Main =
        unsafe { std::mem::transmute::<usize, Main>(placed.base + demo::SYM_PARASITE_MAIN) };
    // SAFETY: the args area is initialised and holds payload_size bytes after the header.
    let ret = unsafe { main(bytes.as_mut_ptr()) };
    assert_eq!(ret, 0, "trap mode returns 0: the stub then traps");
    let after: ParasiteInit = read_plain(bytes).unwrap();
    (after.trap_ret, bytes[ARGS_PAYLOAD_OFFSET..].to_vec())
}

#[test]
fn generated_module_describes_the_blob() {
    let blob = demo::blob();
    blob.validate().unwrap();
    assert_eq!(blob.entry, demo::ENTRY);
    assert_eq!(
        blob.symbol("__export_parasite_head"),
        Some(demo::SYM_PARASITE_HEAD)
    );
    assert_eq!(demo::ENTRY, demo::SYM_PARASITE_HEAD);
    assert_eq!(blob.text_size % BLOB_PAGE_SIZE, 0);
    assert!(!blob.relocs.is_empty());
}

#[test]
fn hello_in_trap_mode() {
    let placed = Placed::new(&demo::blob());
    let (ret, payload) = trap(&placed, demo::proto::CMD_HELLO, &[]);
    assert_eq!(ret, 0);
    let hello: demo::proto::HelloReply = read_plain(&payload).unwrap();
    assert_eq!(hello.pid, std::process::id() as i32);
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        &hello.cwd[..hello.cwd_len as usize],
        cwd.as_os_str().as_encoded_bytes()
    );

    assert_eq!(trap(&placed, CMD_PING, &[]).0, 0);
    assert_eq!(trap(&placed, 4242, &[]).0, -libc::ENOSYS);
    // Passing fds needs the control socket, which trap mode without ctl_fd does not have.
    assert_eq!(
        trap(&placed, demo::proto::CMD_SEND_FD, &[0; 8]).0,
        -libc::ENOTCONN
    );
}
