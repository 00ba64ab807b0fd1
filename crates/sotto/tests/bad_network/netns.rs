//! Network namespaces and TUN devices, made by the test and removed when it
//! ends, passed or not.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;
use std::process::Command;

use nix::libc;

/// Prefix of every namespace these tests make: `sotto-bn-<pid>-<n>-<side>`.
const PREFIX: &str = "sotto-bn-";

/// Why these tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces and TUN devices need it)".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("no `ip` command (iproute2)".into());
    }
    None
}

/// A network namespace; deleted on drop.
pub struct Namespace {
    pub name: String,
}

impl Namespace {
    pub fn new(name: String) -> io::Result<Namespace> {
        ip(&["netns", "add", &name])?;
        let ns = Namespace { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `program` run inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Moves `device` (in the test's own namespace) here and gives it `addr`
    /// (CIDR) on a link that is up.
    pub fn adopt(&self, device: &str, addr: &str) -> io::Result<()> {
        ip(&["link", "set", "dev", device, "netns", &self.name])?;
        ip(&["-n", &self.name, "addr", "add", addr, "dev", device])?;
        ip(&["-n", &self.name, "link", "set", "dev", device, "up"])
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("could not delete network namespace {}: {e}", self.name);
        }
    }
}

/// A namespace name for this process, unique per call.
pub fn unique_name(n: u32, side: &str) -> String {
    format!("{PREFIX}{}-{n}-{side}", std::process::id())
}

/// Deletes namespaces left by test processes that no longer run (killed
/// before their guards ran).
pub fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !std::path::Path::new("/proc").join(pid).exists() && ip(&["netns", "del", &name]).is_ok()
        {
            eprintln!("deleted stale network namespace {name}");
        }
    }
}

/// A TUN device (layer 3, no packet-info header) named `name` in the
/// caller's namespace, non-blocking. It lives as long as the file: closing
/// it removes the device from whatever namespace it was moved to.
pub fn open_tun(name: &str) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    /// `struct ifreq` as TUNSETIFF reads it: the name, then the flags in a
    /// 24-byte union.
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _union_rest: [u8; 22],
    }
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::other(format!("device name {name} is too long")));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _union_rest: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req`
    // is laid out as (40 bytes), on a descriptor this function owns.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
