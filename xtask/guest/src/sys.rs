//! Safe wrappers around the Linux calls std lacks. Each unsafe block is one FFI call whose
//! pointer arguments come from live Rust buffers or C strings of the right length.

use sha2::{Digest, Sha256};
use std::ffi::CString;
use std::io::{Error, Result};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

fn cstr(b: &[u8]) -> Result<CString> {
    CString::new(b).map_err(|_| Error::from(std::io::ErrorKind::InvalidInput))
}

fn cpath(p: &Path) -> Result<CString> {
    cstr(p.as_os_str().as_bytes())
}

/// Names of the extended attributes of `p` (not following symlinks).
pub fn list_xattrs(p: &Path) -> Result<Vec<Vec<u8>>> {
    let c = cpath(p)?;
    loop {
        // SAFETY: a null buffer with size 0 asks for the needed size.
        let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
        if n < 0 {
            return Err(Error::last_os_error());
        }
        let mut buf = vec![0u8; n as usize];
        // SAFETY: buf is writable for buf.len() bytes.
        let m = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if m < 0 {
            let e = Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue; // grew in between
            }
            return Err(e);
        }
        buf.truncate(m as usize);
        return Ok(buf
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(<[u8]>::to_vec)
            .collect());
    }
}

/// Value of one extended attribute of `p` (not following symlinks).
pub fn get_xattr(p: &Path, name: &[u8]) -> Result<Vec<u8>> {
    let c = cpath(p)?;
    let n = cstr(name)?;
    loop {
        // SAFETY: a null buffer with size 0 asks for the needed size.
        let len = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            return Err(Error::last_os_error());
        }
        let mut buf = vec![0u8; len as usize];
        // SAFETY: buf is writable for buf.len() bytes.
        let m =
            unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if m < 0 {
            let e = Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return Err(e);
        }
        buf.truncate(m as usize);
        return Ok(buf);
    }
}

/// Sets an extended attribute on `p` (not following symlinks).
pub fn set_xattr(p: &Path, name: &[u8], value: &[u8]) -> Result<()> {
    let c = cpath(p)?;
    let n = cstr(name)?;
    // SAFETY: value is readable for value.len() bytes.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        Err(Error::last_os_error())
    } else {
        Ok(())
    }
}

/// mknod(2): device nodes, FIFOs.
pub fn mknod(p: &Path, mode: u32, major: u32, minor: u32) -> Result<()> {
    let c = cpath(p)?;
    let dev = libc::makedev(major, minor);
    // SAFETY: plain syscall on a valid C string.
    let r = unsafe { libc::mknod(c.as_ptr(), mode, dev) };
    if r < 0 {
        Err(Error::last_os_error())
    } else {
        Ok(())
    }
}

/// mount(2) with a data string (the filesystem's options).
pub fn mount(source: &str, target: &str, fstype: &str, flags: u64, data: &str) -> Result<()> {
    let (s, t, f, d) = (
        cstr(source.as_bytes())?,
        cstr(target.as_bytes())?,
        cstr(fstype.as_bytes())?,
        cstr(data.as_bytes())?,
    );
    let dptr = if data.is_empty() {
        std::ptr::null()
    } else {
        d.as_ptr()
    };
    // SAFETY: all pointers are valid C strings (or null for no data).
    let r = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            f.as_ptr(),
            flags as libc::c_ulong,
            dptr.cast(),
        )
    };
    if r < 0 {
        Err(Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Read-only mount flag for [`mount`].
#[allow(clippy::unnecessary_cast)] // c_ulong is u32 on 32-bit targets
pub const MS_RDONLY: u64 = libc::MS_RDONLY as u64;

/// umount2(2).
pub fn umount(target: &str) -> Result<()> {
    let t = cstr(target.as_bytes())?;
    // SAFETY: valid C string.
    let r = unsafe { libc::umount2(t.as_ptr(), 0) };
    if r < 0 {
        Err(Error::last_os_error())
    } else {
        Ok(())
    }
}

/// (f_type, f_bsize) from statfs(2).
pub fn statfs(p: &Path) -> Result<(u64, u64)> {
    let c = cpath(p)?;
    // SAFETY: statfs is plain old data; zeroed is a valid value.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: s is a valid out-pointer.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut s) };
    if r < 0 {
        return Err(Error::last_os_error());
    }
    Ok((s.f_type as u64, s.f_bsize as u64))
}

/// A read-only shared mapping of a whole file, unmapped on drop.
pub struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of `f` read-only (`len` > 0).
    pub fn new(f: &std::fs::File, len: usize) -> Result<Mapping> {
        // SAFETY: a fresh mapping chosen by the kernel; fd is open for reading.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::last_os_error());
        }
        Ok(Mapping { ptr, len })
    }

    /// The mapped bytes. Reading a page past EOF of a shrunk file would SIGBUS; our files are
    /// on read-only filesystems and cannot shrink.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is mapped readable for the lifetime of self.
        unsafe { std::slice::from_raw_parts(self.ptr.cast(), self.len) }
    }

    /// Per-page residency (mincore(2)): true when the page is in the page cache.
    pub fn residency(&self) -> Result<Vec<bool>> {
        let pages = self.len.div_ceil(page_size());
        let mut v = vec![0u8; pages];
        // SAFETY: v has one byte per page of the mapping.
        let r = unsafe { libc::mincore(self.ptr, self.len, v.as_mut_ptr()) };
        if r < 0 {
            return Err(Error::last_os_error());
        }
        Ok(v.into_iter().map(|b| b & 1 != 0).collect())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// The page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as usize } else { 4096 }
}

/// SHA-256 of a file read through mmap.
pub fn mmap_sha256(p: &Path) -> Result<[u8; 32]> {
    let f = std::fs::File::open(p)?;
    let len = f.metadata()?.len() as usize;
    if len == 0 {
        return Ok(Sha256::digest(b"").into());
    }
    let m = Mapping::new(&f, len)?;
    Ok(Sha256::digest(m.bytes()).into())
}

/// How many pages of the file at `p` are in the page cache, as seen through mmap + mincore
/// (the mapping does not fault pages in). Returns (resident, total).
pub fn resident_pages(p: &Path) -> Result<(usize, usize)> {
    let f = std::fs::File::open(p)?;
    let len = f.metadata()?.len() as usize;
    if len == 0 {
        return Ok((0, 0));
    }
    let m = Mapping::new(&f, len)?;
    let r = m.residency()?;
    Ok((r.iter().filter(|&&b| b).count(), r.len()))
}

/// posix_fadvise(POSIX_FADV_DONTNEED) over the whole file.
pub fn fadvise_dontneed(p: &Path) -> Result<()> {
    let f = std::fs::File::open(p)?;
    // SAFETY: plain syscall on an open fd.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r != 0 {
        Err(Error::from_raw_os_error(r))
    } else {
        Ok(())
    }
}

/// sync, then `echo 3 > /proc/sys/vm/drop_caches`.
pub fn drop_caches() -> Result<()> {
    sync();
    std::fs::write("/proc/sys/vm/drop_caches", b"3")
}

/// sync(2).
pub fn sync() {
    // SAFETY: no arguments.
    unsafe { libc::sync() };
}

/// A field of /proc/meminfo in kB (e.g. "Cached").
pub fn meminfo_kb(field: &str) -> Result<u64> {
    let s = std::fs::read_to_string("/proc/meminfo")?;
    for l in s.lines() {
        if let Some(rest) = l.strip_prefix(field).and_then(|r| r.strip_prefix(':')) {
            let n = rest.trim().trim_end_matches("kB").trim();
            return n
                .parse()
                .map_err(|_| Error::other(format!("bad meminfo line {l}")));
        }
    }
    Err(Error::other(format!("no {field} in /proc/meminfo")))
}

/// The whole kernel log (syslog(2) READ_ALL), each line starting with `<level>`.
pub fn kernel_log() -> Result<String> {
    let mut buf = vec![0u8; 1 << 20];
    // SAFETY: buf is writable for its length; 3 = SYSLOG_ACTION_READ_ALL.
    let n = unsafe { libc::klogctl(3, buf.as_mut_ptr().cast(), buf.len() as libc::c_int) };
    if n < 0 {
        return Err(Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Waits until everything written to fd 1 has left the (serial) console.
pub fn drain_stdout() {
    // SAFETY: plain syscall on fd 1.
    unsafe { libc::tcdrain(1) };
}

/// Ends QEMU through the `isa-debug-exit` device at port 0xf4: QEMU exits with `2*code+1`.
/// Returns only if the port is unavailable.
#[cfg(target_arch = "x86_64")]
pub fn qemu_debug_exit(code: u8) {
    // SAFETY: ioperm only changes this process's I/O permission bitmap.
    if unsafe { libc::ioperm(0xf4, 4, 1) } != 0 {
        return;
    }
    // SAFETY: port 0xf4 is QEMU's isa-debug-exit device (the host always adds it); writing it
    // ends the VM and touches no memory.
    unsafe { core::arch::asm!("out dx, al", in("dx") 0xf4u16, in("al") code) };
}

/// Not available off x86_64.
#[cfg(not(target_arch = "x86_64"))]
pub fn qemu_debug_exit(_code: u8) {}

/// reboot(2) with POWER_OFF.
pub fn power_off() {
    sync();
    // SAFETY: ends the machine; no memory effects.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
}

/// An exclusive advisory lock (flock(2)) on a file, released on drop.
pub struct FileLock {
    _file: std::fs::File,
}

/// Takes an exclusive lock on `path` (created if missing). Calls `waiting` once if another
/// process holds it, then blocks until it is free.
pub fn lock_exclusive(path: &Path, waiting: impl FnOnce()) -> Result<FileLock> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    // SAFETY: plain syscall on an open fd.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(FileLock { _file: file });
    }
    let e = Error::last_os_error();
    if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
        return Err(e);
    }
    waiting();
    // SAFETY: plain syscall on an open fd.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(Error::last_os_error());
    }
    Ok(FileLock { _file: file })
}
