//! Finding the `weir run` processes of a pipeline file, for `weir reload`.

use std::path::Path;

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

#[cfg(test)]
mod tests {
    use super::*;

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
