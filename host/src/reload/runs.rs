//! Finding the `weir run` processes of a pipeline file (for `weir reload`), and the addresses
//! they serve their admin server on (for `weir state`).

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

/// The processes running `weir run` on the pipeline file `pipeline`, found in `/proc` (Linux):
/// what `weir reload` sends SIGHUP to. A process is one when its program is called `weir`, its
/// subcommand is `run` and its pipeline argument, resolved against its working directory, is the
/// same file.
pub fn runs_of(pipeline: &Path) -> Vec<u32> {
    let Ok(wanted) = pipeline.canonicalize() else {
        return Vec::new();
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let Some(file) = run_argument(&args) else {
            continue;
        };
        let file = Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(file));
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        if cwd.join(file).canonicalize().is_ok_and(|f| f == wanted) {
            found.push(pid);
        }
    }
    found
}

/// The pipeline argument of a `weir run` command line, if it is one.
fn run_argument<'a>(args: &[&'a [u8]]) -> Option<&'a [u8]> {
    let program = args.first()?;
    if program.rsplit(|b| *b == b'/').next() != Some(b"weir".as_slice()) {
        return None;
    }
    let mut rest = args[1..].iter().skip_while(|a| **a != b"run").skip(1);
    while let Some(arg) = rest.next() {
        if *arg == b"--workers" {
            rest.next();
        } else if !arg.starts_with(b"-") && !arg.is_empty() {
            return Some(arg);
        }
    }
    None
}

/// The TCP addresses process `pid` listens on, found in `/proc` (Linux) as `ss -lp` finds them:
/// its socket file descriptors' inodes, looked up among its network namespace's listening
/// sockets. A `weir run` listens on one only, its admin server's. An address on every
/// interface comes back as the loopback one, to connect to.
pub fn listening(pid: u32) -> Vec<SocketAddr> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let inodes: HashSet<String> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_str()?;
            Some(
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let mut found = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        found.extend(text.lines().skip(1).filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            (*state == "0A" && inodes.contains(*inode))
                .then(|| socket_address(local))
                .flatten()
        }));
    }
    found
}

/// `0100007F:1F90` (`/proc/net/tcp`: the address as the kernel's 32-bit words in host order,
/// little-endian here) as an address to connect to.
fn socket_address(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).map(u32::from_be))
        .collect::<Result<_, _>>()
        .ok()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    let ip = match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_this_process_listens_on() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let any = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let found = listening(std::process::id());
        assert!(found.contains(&v4.local_addr().unwrap()), "{found:?}");
        let any_port = any.local_addr().unwrap().port();
        assert!(
            found.contains(&SocketAddr::from(([127, 0, 0, 1], any_port))),
            "{found:?}"
        );
        if let Ok(v6) = std::net::TcpListener::bind("[::1]:0") {
            let found = listening(std::process::id());
            assert!(found.contains(&v6.local_addr().unwrap()), "{found:?}");
        }
    }

    #[test]
    fn finds_the_pipeline_of_a_weir_run_command_line() {
        let args = |line: &'static str| -> Vec<&'static [u8]> {
            line.split(' ').map(str::as_bytes).collect()
        };
        let found = |line| run_argument(&args(line));
        assert_eq!(
            found("/usr/bin/weir run p.toml"),
            Some(b"p.toml".as_slice())
        );
        assert_eq!(
            found("weir run --workers 2 p.toml"),
            Some(b"p.toml".as_slice())
        );
        assert_eq!(
            found("weir run --workers=2 a/p.toml"),
            Some(b"a/p.toml".as_slice())
        );
        assert_eq!(found("weir check p.toml"), None);
        assert_eq!(found("vim run p.toml"), None);
        assert_eq!(found("/bin/notweir run p.toml"), None);
    }
}
