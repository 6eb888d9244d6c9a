//! Real network partitions, safely: the runner moves itself into a network
//! namespace of its own that has nothing but a loopback interface, runs every node
//! there on its own loopback address (127.0.0.11, 127.0.0.12, ...), and cuts links
//! with iptables rules on that loopback. No other interface exists in the
//! namespace, so no packet can leave the machine; the rules and the namespace
//! vanish with the runner's process.
//!
//! [`enter_private`] must run while the process has one thread (before the tokio
//! runtime starts): a network namespace belongs to a thread, and children inherit
//! the namespace of the thread that forks them.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};

static PRIVATE: AtomicBool = AtomicBool::new(false);

/// The address of node `id` in the private namespace.
pub fn node_ip(id: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + id as u8))
}

/// The address clients connect from: distinct from every node's, so cutting a
/// link between two nodes never cuts a client off.
pub const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

/// Moves this (single-threaded) process into a new network namespace with only a
/// loopback interface, brings it up, and checks that iptables works there.
pub fn enter_private() -> Result<()> {
    // SAFETY: unshare(2) takes a flag word and touches no memory of ours.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        bail!(
            "unshare(CLONE_NEWNET): {} (needs root or CAP_SYS_ADMIN)",
            std::io::Error::last_os_error()
        );
    }
    run("ip", &["link", "set", "lo", "up"])?;
    let links = output("ip", &["-o", "link", "show"])?;
    let names: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(str::trim))
        .collect();
    if names != ["lo"] {
        bail!("the new namespace has interfaces {names:?}, expected only lo");
    }
    run("iptables", &["-w", "-F", "INPUT"])?;
    PRIVATE.store(true, Ordering::SeqCst);
    Ok(())
}

/// Whether [`enter_private`] succeeded: partitions are possible.
pub fn is_private() -> bool {
    PRIVATE.load(Ordering::SeqCst)
}

/// Drops every packet between `a` and `b`, both ways. Only inside the private
/// namespace: on the host it would cut the host's own loopback traffic.
pub fn cut(a: IpAddr, b: IpAddr) -> Result<()> {
    if !is_private() {
        bail!("refusing to touch iptables outside the runner's private namespace");
    }
    for (src, dst) in [(a, b), (b, a)] {
        run(
            "iptables",
            &[
                "-w",
                "-A",
                "INPUT",
                "-s",
                &src.to_string(),
                "-d",
                &dst.to_string(),
                "-j",
                "DROP",
            ],
        )?;
    }
    Ok(())
}

/// Removes every cut.
pub fn heal() -> Result<()> {
    if !is_private() {
        return Ok(());
    }
    run("iptables", &["-w", "-F", "INPUT"])
}

fn run(cmd: &str, args: &[&str]) -> Result<()> {
    output(cmd, args).map(|_| ())
}

fn output(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("run {cmd} (scripts/setup installs it)"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
