//! Finds, installs (once per user) and links the native toolchain the workspace builds against:
//! libtorch 2.13.0 (what tch 0.26.0 is built for) and a cmake >= 3.18 (HDF5 is built from source).
//!
//! Resolution order, for each tool:
//! 1. an environment variable the user set (`LIBTORCH`, `CMAKE`), respected as is;
//! 2. for cmake only: a `cmake` on `PATH` that is recent enough;
//! 3. the per-user cache shared by all clones, `${XDG_CACHE_HOME:-$HOME/.cache}/enf-rs/`, filled
//!    on first use by `python3 -m pip install --target` into `<name>.partial`, which is renamed to
//!    `<name>` only once pip has succeeded and the result checks out. A half-finished install is
//!    therefore never used, and a stale `.partial` left by an interrupted run is removed and redone.
//!
//! The chosen tools are then linked into `<repo>/.toolchain/` so that `.cargo/config.toml`'s `[env]`
//! makes a plain `cargo build` work too.
//!
//! Cargo's `[env]` also injects `LIBTORCH=<repo>/.toolchain/libtorch` and
//! `CMAKE=<repo>/.toolchain/cmake` into this very process (`cargo xtask` is a `cargo run`): those
//! exact values are recognised as ours and not mistaken for a user's choice.

use anyhow::{bail, ensure, Context, Result};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The libtorch version tch 0.26.0 is built against (pinned exactly).
pub const TORCH_VERSION: &str = "2.13.0";
/// The cmake version installed from PyPI when no suitable cmake is found.
pub const CMAKE_PIN: &str = "3.31.6";
/// The oldest cmake accepted from `PATH` (what HDF5's CMake build requires).
pub const CMAKE_MIN: (u32, u32) = (3, 18);

/// Name of the per-repo folder holding the toolchain links (git-ignored).
const TOOLCHAIN_DIR: &str = ".toolchain";

/// Where a tool came from; shown in the set-up notes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// An environment variable set by the user.
    Env(&'static str),
    /// Found on `PATH`.
    Path,
    /// Already in the per-user cache.
    Cached,
    /// Installed into the per-user cache by this run.
    Installed,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Env(var) => write!(f, "from ${var}"),
            Origin::Path => f.write_str("from PATH"),
            Origin::Cached => f.write_str("cached"),
            Origin::Installed => f.write_str("installed now"),
        }
    }
}

/// One resolved tool.
#[derive(Debug, Clone)]
pub struct Tool {
    /// The tool's location (libtorch: its folder holding `lib/` and `include/`; cmake: the binary).
    pub path: PathBuf,
    /// Its version, if it could be determined.
    pub version: Option<String>,
    /// Where it came from.
    pub origin: Origin,
    /// The value handed to child processes in the tool's variable: the user's own value when they
    /// set one (made absolute: children run in the repo root), else the `.toolchain/` link, which is exactly what `.cargo/config.toml` gives a plain
    /// `cargo build`, so switching between the two never invalidates the build cache.
    pub env_value: PathBuf,
}

/// The set-up toolchain of one checkout.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// libtorch 2.13.0.
    pub libtorch: Tool,
    /// cmake.
    pub cmake: Tool,
}

impl Toolchain {
    /// Environment variables to set on every cargo or binary spawned: `LIBTORCH`, `CMAKE`, and
    /// `LD_LIBRARY_PATH` with `$LIBTORCH/lib` prepended. Everything else is inherited unchanged.
    pub fn child_env(&self) -> Vec<(&'static str, OsString)> {
        let lib = self.libtorch.env_value.join("lib");
        let current = std::env::var_os("LD_LIBRARY_PATH").unwrap_or_default();
        vec![
            ("LIBTORCH", self.libtorch.env_value.clone().into_os_string()),
            ("CMAKE", self.cmake.env_value.clone().into_os_string()),
            ("LD_LIBRARY_PATH", prepend_path(&lib, &current)),
        ]
    }
}

/// Makes libtorch and cmake available (installing them into the per-user cache if needed),
/// links them into `<repo>/.toolchain/`, and prints a one-line note to stderr per step.
pub fn setup(repo: &Path) -> Result<Toolchain> {
    let links = repo.join(TOOLCHAIN_DIR);
    let mut cache = None;
    let mut cache_root = || -> Result<PathBuf> {
        if cache.is_none() {
            cache = Some(cache_root_from(
                std::env::var_os("XDG_CACHE_HOME"),
                std::env::var_os("HOME"),
            )?);
        }
        Ok(cache.clone().expect("just set"))
    };

    let libtorch_link = links.join("libtorch");
    let libtorch = match user_override(std::env::var_os("LIBTORCH"), &libtorch_link) {
        Some(dir) => libtorch_from_env(&dir)?,
        None => libtorch_from_cache(&cache_root()?, &libtorch_link)?,
    };
    note(&format!(
        "libtorch {}: {} ({})",
        libtorch.version.as_deref().unwrap_or("(version unknown)"),
        libtorch.path.display(),
        libtorch.origin
    ));
    if let Some(v) = &libtorch.version {
        if !v.starts_with(TORCH_VERSION) {
            note(&format!(
                "warning: tch 0.26.0 expects libtorch {TORCH_VERSION}, $LIBTORCH has {v}; \
                 the tch build will fail unless LIBTORCH_BYPASS_VERSION_CHECK=1"
            ));
        }
    }

    let cmake_link = links.join("cmake");
    let cmake = match user_override(std::env::var_os("CMAKE"), &cmake_link) {
        Some(bin) => cmake_from_env(&bin)?,
        None => match cmake_from_path(&cmake_link) {
            Some(tool) => tool,
            None => cmake_from_cache(&cache_root()?, &cmake_link)?,
        },
    };
    note(&format!(
        "cmake {}: {} ({})",
        cmake.version.as_deref().unwrap_or("(version unknown)"),
        cmake.path.display(),
        cmake.origin
    ));

    for (link, tool) in [(&libtorch_link, &libtorch), (&cmake_link, &cmake)] {
        if link_to(link, &tool.path)? {
            note(&format!(
                "linked {} -> {}",
                link.strip_prefix(repo).unwrap_or(link).display(),
                tool.path.display()
            ));
        }
    }
    Ok(Toolchain { libtorch, cmake })
}

/// Prints a set-up note to stderr (stdout stays clean for `cargo xtask env`).
pub fn note(msg: &str) {
    eprintln!("[xtask] {msg}");
}

// ---------------------------------------------------------------------------------------------
// Pure decisions (unit-tested)
// ---------------------------------------------------------------------------------------------

/// The per-user cache root: `$XDG_CACHE_HOME/enf-rs` if that is set to an absolute path (the XDG
/// spec says to ignore relative ones), else `$HOME/.cache/enf-rs`.
pub fn cache_root_from(
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf> {
    if let Some(xdg) = xdg_cache_home.filter(|v| Path::new(v).is_absolute()) {
        return Ok(PathBuf::from(xdg).join("enf-rs"));
    }
    match home.filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".cache").join("enf-rs")),
        None => bail!(
            "cannot locate the per-user cache: neither XDG_CACHE_HOME nor HOME is set \
             (set one of them, or set LIBTORCH and CMAKE to existing installs)"
        ),
    }
}

/// The user's own choice in a tool variable, if any: `None` when unset, empty, or equal to the
/// `.toolchain/` link that cargo's `[env]` injects into `cargo xtask` itself.
pub fn user_override(value: Option<OsString>, injected: &Path) -> Option<PathBuf> {
    let value = PathBuf::from(value.filter(|v| !v.is_empty())?);
    (value != injected).then_some(value)
}

/// The `__version__` string of a PyTorch `version.py` (e.g. `2.13.0+cu130`).
pub fn parse_torch_version(version_py: &str) -> Option<String> {
    version_py.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("__version__")?.trim_start();
        let rest = rest.strip_prefix(':').map_or(rest, |r| {
            // `__version__: str = '...'`
            r.split_once('=').map_or("", |(_, v)| v)
        });
        let rest = rest.trim_start().strip_prefix('=').unwrap_or(rest).trim();
        let quote = rest.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let inner = &rest[1..];
        Some(inner[..inner.find(quote)?].to_string())
    })
}

/// The `(major, minor, patch)` of `cmake --version` output (`cmake version 3.31.6[-suffix]`).
pub fn parse_cmake_version(output: &str) -> Option<(u32, u32, u32)> {
    let word = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("cmake version "))?
        .split_whitespace()
        .next()?;
    let mut parts = word.split(['.', '-', '+']).map(|p| {
        let digits: String = p.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse::<u32>().ok()
    });
    let major = parts.next()??;
    let minor = parts.next()??;
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// Whether a cmake version is at least [`CMAKE_MIN`].
pub fn cmake_recent_enough(version: (u32, u32, u32)) -> bool {
    (version.0, version.1) >= CMAKE_MIN
}

/// `dir` then the entries of a `PATH`-like list, `dir` not repeated if already first.
pub fn prepend_path(dir: &Path, current: &OsStr) -> OsString {
    let mut entries = vec![dir.to_path_buf()];
    entries.extend(std::env::split_paths(current).filter(|p| !p.as_os_str().is_empty()));
    entries.dedup();
    std::env::join_paths(entries).unwrap_or_else(|_| dir.as_os_str().to_owned())
}

// ---------------------------------------------------------------------------------------------
// libtorch
// ---------------------------------------------------------------------------------------------

/// Checks that `dir` is a libtorch folder (has `lib/libtorch_cpu.so`).
fn check_libtorch_dir(dir: &Path) -> Result<()> {
    let lib = dir.join("lib").join("libtorch_cpu.so");
    ensure!(
        lib.is_file(),
        "{} is not a libtorch folder: {} is missing",
        dir.display(),
        lib.display()
    );
    Ok(())
}

/// libtorch's version: `version.py` beside it (PyPI wheel) or `build-version` in it (libtorch zip).
fn libtorch_version(dir: &Path) -> Option<String> {
    if let Ok(text) = fs::read_to_string(dir.join("version.py")) {
        return parse_torch_version(&text);
    }
    fs::read_to_string(dir.join("build-version"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// libtorch named by the user's `LIBTORCH`.
fn libtorch_from_env(dir: &Path) -> Result<Tool> {
    let abs = absolute(dir)?;
    check_libtorch_dir(&abs).with_context(|| {
        format!(
            "LIBTORCH={} does not point at libtorch {TORCH_VERSION}: fix it, or unset LIBTORCH \
             to let `cargo xtask setup` install torch=={TORCH_VERSION} into the per-user cache",
            dir.display()
        )
    })?;
    Ok(Tool {
        version: libtorch_version(&abs),
        env_value: abs.clone(),
        path: abs,
        origin: Origin::Env("LIBTORCH"),
    })
}

/// libtorch from the per-user cache, installing torch==2.13.0 from PyPI into it first if needed.
fn libtorch_from_cache(cache: &Path, link: &Path) -> Result<Tool> {
    let name = format!("torch-{TORCH_VERSION}");
    let check = |root: &Path| -> Result<()> {
        let dir = root.join("torch");
        check_libtorch_dir(&dir)?;
        let version = libtorch_version(&dir)
            .with_context(|| format!("no __version__ in {}", dir.join("version.py").display()))?;
        ensure!(
            version.starts_with(TORCH_VERSION),
            "{} holds torch {version}, not {TORCH_VERSION}",
            dir.display()
        );
        Ok(())
    };
    let (root, installed) = ensure_cached(cache, &name, check, |partial| {
        let python = find_python()?;
        note(&format!(
            "libtorch {TORCH_VERSION}: not cached; installing torch=={TORCH_VERSION} from PyPI \
             into {} (about 5 GB, a few minutes, once per user)",
            cache.join(&name).display()
        ));
        pip_install(&python, partial, &[&format!("torch=={TORCH_VERSION}")])
    })?;
    let path = root.join("torch");
    Ok(Tool {
        version: libtorch_version(&path),
        path,
        origin: if installed {
            Origin::Installed
        } else {
            Origin::Cached
        },
        env_value: link.to_path_buf(),
    })
}

// ---------------------------------------------------------------------------------------------
// cmake
// ---------------------------------------------------------------------------------------------

/// Runs `<bin> --version` and parses it.
fn cmake_version(bin: &Path) -> Result<(u32, u32, u32)> {
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not run `{} --version`", bin.display()))?;
    ensure!(
        out.status.success(),
        "`{} --version` failed ({})",
        bin.display(),
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    parse_cmake_version(&text)
        .with_context(|| format!("unexpected `{} --version` output: {text}", bin.display()))
}

/// Formats a parsed version.
fn fmt_version(v: (u32, u32, u32)) -> String {
    format!("{}.{}.{}", v.0, v.1, v.2)
}

/// cmake named by the user's `CMAKE` (a path, or a bare name looked up on `PATH`).
fn cmake_from_env(value: &Path) -> Result<Tool> {
    let bare_name = value.components().count() == 1 && !value.is_absolute();
    let bin = if bare_name {
        find_on_path(value.as_os_str())
            .with_context(|| format!("CMAKE={}: not found on PATH", value.display()))?
    } else {
        absolute(value)?
    };
    let version = cmake_version(&bin).with_context(|| {
        format!(
            "CMAKE={} is not a working cmake: fix it, or unset CMAKE",
            value.display()
        )
    })?;
    if !cmake_recent_enough(version) {
        note(&format!(
            "warning: CMAKE={} is cmake {}, older than the {}.{} HDF5 needs",
            value.display(),
            fmt_version(version),
            CMAKE_MIN.0,
            CMAKE_MIN.1
        ));
    }
    Ok(Tool {
        env_value: if bare_name {
            value.to_path_buf()
        } else {
            bin.clone()
        },
        path: bin,
        version: Some(fmt_version(version)),
        origin: Origin::Env("CMAKE"),
    })
}

/// A recent enough `cmake` on `PATH`, if any (an older one is reported and skipped).
fn cmake_from_path(link: &Path) -> Option<Tool> {
    let bin = find_on_path(OsStr::new("cmake"))?;
    match cmake_version(&bin) {
        Ok(v) if cmake_recent_enough(v) => Some(Tool {
            path: bin,
            version: Some(fmt_version(v)),
            origin: Origin::Path,
            env_value: link.to_path_buf(),
        }),
        Ok(v) => {
            note(&format!(
                "cmake on PATH ({}) is {}, older than {}.{}: using cmake {CMAKE_PIN} from PyPI instead",
                bin.display(),
                fmt_version(v),
                CMAKE_MIN.0,
                CMAKE_MIN.1
            ));
            None
        }
        Err(e) => {
            note(&format!("ignoring unusable cmake on PATH: {e:#}"));
            None
        }
    }
}

/// cmake from the per-user cache, installing cmake==3.31.6 from PyPI into it first if needed.
fn cmake_from_cache(cache: &Path, link: &Path) -> Result<Tool> {
    let name = format!("cmake-{CMAKE_PIN}");
    let bin_in = |root: &Path| root.join("cmake").join("data").join("bin").join("cmake");
    let check = |root: &Path| -> Result<()> {
        let v = cmake_version(&bin_in(root))?;
        ensure!(
            fmt_version(v) == CMAKE_PIN,
            "{} is cmake {}, not {CMAKE_PIN}",
            bin_in(root).display(),
            fmt_version(v)
        );
        Ok(())
    };
    let (root, installed) = ensure_cached(cache, &name, check, |partial| {
        let python = find_python()?;
        note(&format!(
            "cmake: no cmake >= {}.{} on PATH; installing cmake=={CMAKE_PIN} from PyPI into {}",
            CMAKE_MIN.0,
            CMAKE_MIN.1,
            cache.join(&name).display()
        ));
        pip_install(&python, partial, &[&format!("cmake=={CMAKE_PIN}")])
    })?;
    Ok(Tool {
        path: bin_in(&root),
        version: Some(CMAKE_PIN.to_string()),
        origin: if installed {
            Origin::Installed
        } else {
            Origin::Cached
        },
        env_value: link.to_path_buf(),
    })
}

// ---------------------------------------------------------------------------------------------
// Cache, pip, links, PATH
// ---------------------------------------------------------------------------------------------

/// Returns `<cache>/<name>`, first creating it with `install` if it is not there yet.
///
/// `install` fills `<cache>/<name>.partial` (which it gets empty); if that succeeds and `check`
/// accepts the result, it is renamed to `<cache>/<name>`. An existing `<cache>/<name>` is only
/// checked. A `.partial` left over from an interrupted run is deleted first. Concurrent set-ups
/// (several clones, one user) are serialised by an advisory lock on `<cache>/.<name>.lock`.
/// The boolean is true when `install` ran.
pub fn ensure_cached(
    cache: &Path,
    name: &str,
    check: impl Fn(&Path) -> Result<()>,
    install: impl FnOnce(&Path) -> Result<()>,
) -> Result<(PathBuf, bool)> {
    let done = cache.join(name);
    let broken = |e: anyhow::Error| {
        e.context(format!(
            "the cached {} is broken: delete that folder and run `cargo xtask setup` again",
            done.display()
        ))
    };
    if done.exists() {
        check(&done).map_err(broken)?;
        return Ok((done, false));
    }

    fs::create_dir_all(cache)
        .with_context(|| format!("could not create the cache folder {}", cache.display()))?;
    let lock_path = cache.join(format!(".{name}.lock"));
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("could not open the lock file {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        note(&format!(
            "waiting for another `cargo xtask setup` to finish installing {} ...",
            done.display()
        ));
        lock.lock()
            .with_context(|| format!("could not lock {}", lock_path.display()))?;
    }
    // Another process may have finished while we waited.
    if done.exists() {
        check(&done).map_err(broken)?;
        return Ok((done, false));
    }

    let partial = cache.join(format!("{name}.partial"));
    if partial.exists() {
        note(&format!(
            "removing {} left by an interrupted install",
            partial.display()
        ));
        fs::remove_dir_all(&partial)
            .with_context(|| format!("could not remove the stale {}", partial.display()))?;
    }
    install(&partial).with_context(|| {
        format!(
            "could not install {name} into {} (the next `cargo xtask setup` starts it afresh)",
            cache.display()
        )
    })?;
    check(&partial).with_context(|| {
        format!(
            "the fresh install in {} does not check out",
            partial.display()
        )
    })?;
    fs::rename(&partial, &done).with_context(|| {
        format!(
            "could not rename {} to {}",
            partial.display(),
            done.display()
        )
    })?;
    Ok((done, true))
}

/// The reference's ODE solver and what it imports, for `cargo xtask bench-torchdiffeq`.
pub const TORCHDIFFEQ_REQUIREMENTS: [&str; 3] =
    ["torchdiffeq==0.2.5", "numpy==2.4.6", "scipy==1.17.1"];

/// The Python packages of the torchdiffeq comparison in the per-user cache (installed with
/// `pip --no-deps` on first use, so pip never pulls a second torch; the project's torch wheel
/// provides it). Returns the folder to put on `PYTHONPATH`.
pub fn torchdiffeq_packages() -> Result<PathBuf> {
    let cache = cache_root_from(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))?;
    let check = |root: &Path| -> Result<()> {
        for package in ["torchdiffeq", "numpy", "scipy"] {
            ensure!(
                root.join(package).join("__init__.py").exists(),
                "{} has no {package} package",
                root.display()
            );
        }
        Ok(())
    };
    let (root, _) = ensure_cached(&cache, "torchdiffeq-0.2.5", check, |partial| {
        let python = find_python()?;
        note(&format!(
            "installing {} from PyPI into {} (once per user)",
            TORCHDIFFEQ_REQUIREMENTS.join(", "),
            cache.display()
        ));
        let mut args = vec!["--no-deps"];
        args.extend(TORCHDIFFEQ_REQUIREMENTS);
        pip_install(&python, partial, &args)
    })?;
    Ok(root)
}

/// `python3` from `PATH`, checked to have a working pip.
pub fn find_python() -> Result<PathBuf> {
    let python = find_on_path(OsStr::new("python3")).context(
        "python3 is needed (once) to install the toolchain from PyPI but is not on PATH: install \
         python3 and pip (Debian/Ubuntu: `apt-get install python3 python3-pip`), or set LIBTORCH \
         / CMAKE to existing installs",
    )?;
    let pip_ok = Command::new(&python)
        .args(["-m", "pip", "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ensure!(
        pip_ok,
        "`{} -m pip` does not work: install pip (Debian/Ubuntu: `apt-get install python3-pip`; \
         elsewhere `python3 -m ensurepip --user`), or set LIBTORCH / CMAKE to existing installs",
        python.display()
    );
    Ok(python)
}

/// `python3 -m pip install --no-input --disable-pip-version-check --target <target> <requirement>`,
/// pip's output going to stderr.
fn pip_install(python: &Path, target: &Path, requirements: &[&str]) -> Result<()> {
    let status = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--no-input",
            "--disable-pip-version-check",
            "--target",
        ])
        .arg(target)
        .args(requirements)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("could not run {}", python.display()))?;
    ensure!(
        status.success(),
        "`{} -m pip install --target {} {}` failed ({status}); see pip's output above \
         (no network access to PyPI? not enough disk space?)",
        python.display(),
        target.display(),
        requirements.join(" ")
    );
    Ok(())
}

/// Points the symlink `link` at `target`, creating its folder; leaves a correct link alone and
/// atomically replaces one pointing elsewhere (or a dangling one). Refuses to replace anything
/// that is not a symlink. Returns whether the link changed.
pub fn link_to(link: &Path, target: &Path) -> Result<bool> {
    match fs::symlink_metadata(link) {
        Ok(meta) if meta.file_type().is_symlink() => {
            if fs::read_link(link).ok().as_deref() == Some(target) {
                return Ok(false);
            }
        }
        Ok(_) => bail!(
            "{} exists and is not a symlink: move it away, then run `cargo xtask setup` again",
            link.display()
        ),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("could not inspect {}", link.display())),
    }
    let dir = link.parent().context("link path has no parent folder")?;
    fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        link.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .with_context(|| format!("could not create the symlink {}", tmp.display()))?;
    fs::rename(&tmp, link).with_context(|| {
        let _ = fs::remove_file(&tmp);
        format!("could not replace {}", link.display())
    })?;
    Ok(true)
}

/// The first executable file called `name` in `PATH`.
pub fn find_on_path(name: &OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// `path` made absolute against the current directory (without resolving symlinks).
fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("could not make {} absolute", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A fresh, self-deleting scratch folder (no tempfile dependency).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "xtask-test-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A fake installer: writes `marker` into the target folder.
    fn fake_install(target: &Path) -> Result<()> {
        fs::create_dir_all(target)?;
        fs::write(target.join("marker"), "ok")?;
        Ok(())
    }

    /// A check accepting folders with the marker.
    fn has_marker(dir: &Path) -> Result<()> {
        ensure!(dir.join("marker").is_file(), "no marker");
        Ok(())
    }

    #[test]
    fn torch_version_from_wheel_version_py() {
        let text = "from typing import Optional\n\n__all__ = ['__version__']\n\
                    __version__ = '2.13.0+cu130'\ndebug = False\n";
        assert_eq!(parse_torch_version(text).as_deref(), Some("2.13.0+cu130"));
        assert_eq!(
            parse_torch_version("__version__: str = \"2.13.0\"\n").as_deref(),
            Some("2.13.0")
        );
        assert_eq!(parse_torch_version("version = '1'\n"), None);
    }

    #[test]
    fn cmake_version_parsing_and_minimum() {
        assert_eq!(
            parse_cmake_version("cmake version 3.31.6\n\nCMake suite maintained"),
            Some((3, 31, 6))
        );
        assert_eq!(
            parse_cmake_version("cmake version 3.28.3-dirty\n"),
            Some((3, 28, 3))
        );
        assert_eq!(parse_cmake_version("cmake version 4.0\n"), Some((4, 0, 0)));
        assert_eq!(parse_cmake_version("something else"), None);
        assert!(cmake_recent_enough((3, 18, 0)));
        assert!(cmake_recent_enough((4, 0, 0)));
        assert!(!cmake_recent_enough((3, 16, 3)));
    }

    #[test]
    fn cache_root_choice() {
        let some = |s: &str| Some(OsString::from(s));
        assert_eq!(
            cache_root_from(some("/x/cache"), some("/home/u")).unwrap(),
            PathBuf::from("/x/cache/enf-rs")
        );
        // Empty or relative XDG_CACHE_HOME is ignored, as the XDG spec says.
        for xdg in [some(""), some("rel/cache"), None] {
            assert_eq!(
                cache_root_from(xdg, some("/home/u")).unwrap(),
                PathBuf::from("/home/u/.cache/enf-rs")
            );
        }
        assert!(cache_root_from(None, None).is_err());
    }

    #[test]
    fn injected_env_values_are_not_user_overrides() {
        let link = Path::new("/repo/.toolchain/libtorch");
        assert_eq!(user_override(None, link), None);
        assert_eq!(user_override(Some("".into()), link), None);
        assert_eq!(
            user_override(Some("/repo/.toolchain/libtorch/".into()), link),
            None
        );
        assert_eq!(
            user_override(Some("/opt/libtorch".into()), link),
            Some(PathBuf::from("/opt/libtorch"))
        );
    }

    #[test]
    fn ld_library_path_prepending() {
        let lib = Path::new("/t/lib");
        assert_eq!(prepend_path(lib, OsStr::new("")), OsString::from("/t/lib"));
        assert_eq!(
            prepend_path(lib, OsStr::new("/a:/b")),
            OsString::from("/t/lib:/a:/b")
        );
        assert_eq!(
            prepend_path(lib, OsStr::new("/t/lib:/a")),
            OsString::from("/t/lib:/a")
        );
    }

    #[test]
    fn cache_installs_once_then_reuses() {
        let scratch = Scratch::new("once");
        let cache = scratch.0.join("enf-rs");
        let (dir, installed) = ensure_cached(&cache, "tool-1", has_marker, fake_install).unwrap();
        assert!(installed);
        assert_eq!(dir, cache.join("tool-1"));
        assert!(!cache.join("tool-1.partial").exists());
        let calls = Cell::new(0);
        let (again, installed) = ensure_cached(&cache, "tool-1", has_marker, |p| {
            calls.set(calls.get() + 1);
            fake_install(p)
        })
        .unwrap();
        assert_eq!((again, installed, calls.get()), (dir, false, 0));
    }

    #[test]
    fn stale_partial_is_removed_and_redone() {
        let scratch = Scratch::new("stale");
        let partial = scratch.0.join("tool-1.partial");
        fs::create_dir_all(&partial).unwrap();
        fs::write(partial.join("junk"), "half").unwrap();
        let (dir, installed) = ensure_cached(&scratch.0, "tool-1", has_marker, |p| {
            assert!(!p.exists(), "installer must get an empty target");
            fake_install(p)
        })
        .unwrap();
        assert!(installed);
        assert!(dir.join("marker").is_file());
        assert!(!dir.join("junk").exists());
    }

    #[test]
    fn failed_install_is_never_used() {
        let scratch = Scratch::new("fail");
        let err = ensure_cached(&scratch.0, "tool-1", has_marker, |p| {
            fs::create_dir_all(p)?;
            bail!("network down")
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("network down"));
        assert!(!scratch.0.join("tool-1").exists());
        // An install that "succeeds" but fails the check is not promoted either.
        assert!(ensure_cached(&scratch.0, "tool-1", has_marker, |p| Ok(
            fs::create_dir_all(p)?
        ))
        .is_err());
        assert!(!scratch.0.join("tool-1").exists());
    }

    #[test]
    fn broken_cache_entry_is_reported() {
        let scratch = Scratch::new("broken");
        fs::create_dir_all(scratch.0.join("tool-1")).unwrap();
        let err = ensure_cached(&scratch.0, "tool-1", has_marker, fake_install).unwrap_err();
        assert!(format!("{err:#}").contains("delete that folder"));
    }

    #[test]
    fn links_are_created_kept_and_replaced() {
        let scratch = Scratch::new("links");
        let link = scratch.0.join(".toolchain").join("libtorch");
        let (a, b) = (scratch.0.join("a"), scratch.0.join("b"));
        assert!(link_to(&link, &a).unwrap());
        assert!(!link_to(&link, &a).unwrap());
        assert!(link_to(&link, &b).unwrap());
        assert_eq!(fs::read_link(&link).unwrap(), b);
        let real = scratch.0.join(".toolchain").join("cmake");
        fs::write(&real, "not a link").unwrap();
        assert!(link_to(&real, &a).is_err());
    }
}
