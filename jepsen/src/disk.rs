//! A full disk, safely: the runner moves itself into a mount namespace of its own
//! (mounts made private, so nothing propagates to the host), gives every node's
//! data directory a size-limited tmpfs, and the `disk` nemesis fills one node's
//! with a ballast file until writes fail with ENOSPC. Healing removes the ballast
//! and restarts the node, as an operator would after freeing space.
//!
//! Like [`crate::netns::enter_private`], [`enter_private`] must run while the
//! process has one thread.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};

static PRIVATE: AtomicBool = AtomicBool::new(false);

/// Each node's tmpfs, in MiB.
pub const DATA_MIB: u64 = 64;

const BALLAST: &str = "jepsen-ballast";

fn c_path(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).context("a path with a NUL byte")
}

fn check(rc: libc::c_int, what: &str) -> Result<()> {
    if rc != 0 {
        bail!("{what}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Moves this (single-threaded) process into a new mount namespace whose mounts
/// do not propagate back to the host.
pub fn enter_private() -> Result<()> {
    // SAFETY: unshare(2) takes a flag word and touches no memory of ours.
    check(
        unsafe { libc::unshare(libc::CLONE_NEWNS) },
        "unshare(CLONE_NEWNS)",
    )?;
    let root = c_path(Path::new("/"))?;
    // SAFETY: valid NUL-terminated strings or null, as mount(2) expects.
    check(
        unsafe {
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        },
        "make / private",
    )?;
    PRIVATE.store(true, Ordering::SeqCst);
    Ok(())
}

/// Whether [`enter_private`] succeeded: the disk nemesis is possible.
pub fn is_private() -> bool {
    PRIVATE.load(Ordering::SeqCst)
}

/// Mounts a `DATA_MIB` tmpfs at `dir` (created if missing).
pub fn mount_data_dir(dir: &Path) -> Result<()> {
    if !is_private() {
        bail!("refusing to mount outside the runner's private mount namespace");
    }
    std::fs::create_dir_all(dir)?;
    let (src, target, fs) = (
        CString::new("jepsen-data")?,
        c_path(dir)?,
        CString::new("tmpfs")?,
    );
    let data = CString::new(format!("size={DATA_MIB}m,mode=0700"))?;
    // SAFETY: valid NUL-terminated strings, as mount(2) expects.
    check(
        unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fs.as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        },
        "mount tmpfs",
    )
}

/// Detaches the tmpfs at `dir` (processes still using it keep it until they exit).
pub fn unmount_data_dir(dir: &Path) -> Result<()> {
    let target = c_path(dir)?;
    // SAFETY: a valid NUL-terminated path.
    check(
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) },
        "umount",
    )
}

/// Fills the file system of `dir` with a ballast file until a write fails;
/// returns the MiB written.
pub fn fill(dir: &Path) -> Result<u64> {
    let mut f = std::fs::File::create(dir.join(BALLAST))?;
    let chunk = vec![0u8; 1 << 20];
    let mut mib = 0;
    while mib < DATA_MIB {
        match f.write_all(&chunk) {
            Ok(()) => mib += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e.into()),
        }
    }
    // Fill the last partial MiB too.
    for _ in 0..256 {
        if f.write_all(&chunk[..4096]).is_err() {
            break;
        }
    }
    Ok(mib)
}

/// Removes the ballast.
pub fn free(dir: &Path) -> Result<()> {
    match std::fs::remove_file(dir.join(BALLAST)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}
