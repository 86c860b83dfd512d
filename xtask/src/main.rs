//! `cargo xtask`: project tasks for enf-rs that need no manual set-up step.
//!
//! Every command first runs the idempotent set-up ([`toolchain::setup`]): libtorch 2.13.0 and
//! cmake are found or installed once per user and linked into `<repo>/.toolchain/`; then the
//! command runs cargo (or prints shell exports) with `LIBTORCH`, `CMAKE` and `LD_LIBRARY_PATH` set.

mod toolchain;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

/// Project tasks for enf-rs. Each one first sets up the toolchain (libtorch 2.13.0 and cmake,
/// installed once per user into ${XDG_CACHE_HOME:-~/.cache}/enf-rs and linked into .toolchain/),
/// then runs with LIBTORCH, CMAKE and LD_LIBRARY_PATH set.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    version,
    after_help = "Commands that pass arguments through take every argument after the command \
                  verbatim, --help included (`cargo xtask enf --help` is the enf binary's help); \
                  use `cargo xtask help <COMMAND>` for xtask's own help on them.\n\n\
                  Environment: LIBTORCH (an existing libtorch 2.13.0 folder) and CMAKE (a cmake \
                  binary) override the automatic choice; XDG_CACHE_HOME moves the per-user cache."
)]
struct Cli {
    /// The task to run.
    #[command(subcommand)]
    command: Cmd,
}

/// The tasks.
#[derive(Debug, Subcommand)]
enum Cmd {
    /// Find or install libtorch 2.13.0 and cmake, link them into .toolchain/, print what was found.
    ///
    /// Idempotent: a second run only checks. After it a plain `cargo build` / `cargo test --release`
    /// works too, through .cargo/config.toml's [env].
    Setup,
    /// Print `export LIBTORCH=... CMAKE=... LD_LIBRARY_PATH=...` lines for a shell.
    ///
    /// Use as `eval "$(cargo xtask env)"`. Runs the set-up first; its notes go to stderr.
    Env,
    /// Set up, then `cargo test --workspace --release [ARGS]...`; exits with cargo's status.
    #[command(disable_help_flag = true)]
    Test(PassThrough),
    /// Set up, then run `enf reproduce-table1 [ARGS]...` (release build of enf-experiments).
    #[command(name = "reproduce-table1", disable_help_flag = true)]
    ReproduceTable1(PassThrough),
    /// Set up, then run `enf reproduce-table2 [ARGS]...` (QM9: pretrained E-NF, GNF baselines).
    #[command(name = "reproduce-table2", disable_help_flag = true)]
    ReproduceTable2(PassThrough),
    /// Set up, then run `enf reproduce-table3 [ARGS]...` (QM9 positional, every method trained).
    #[command(name = "reproduce-table3", disable_help_flag = true)]
    ReproduceTable3(PassThrough),
    /// Set up, then run the `enf` binary with [ARGS]... (release build of enf-experiments).
    #[command(disable_help_flag = true)]
    Enf(PassThrough),
    /// Set up, then `cargo bench -p enf-benches [ARGS]...`.
    #[command(disable_help_flag = true)]
    Bench(PassThrough),
    /// Time the solves of the ode_core benchmark with torchdiffeq 0.2.5 (the reference's solver):
    /// installs torchdiffeq, numpy and scipy next to the torch wheel once, then runs
    /// `benches/torchdiffeq/compare.py [ARGS]...` (`--threads N`, `--repeats N`, `--layout
    /// flat|dense`, `--train-dw4 EPOCHS`).
    #[command(name = "bench-torchdiffeq", disable_help_flag = true)]
    BenchTorchdiffeq(PassThrough),
}

/// Arguments handed on verbatim.
#[derive(Debug, Args)]
struct PassThrough {
    /// Arguments passed through verbatim (hyphens, `--` and `--help` included).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        num_args = 0..,
        value_name = "ARGS"
    )]
    args: Vec<OsString>,
}

/// The commands whose arguments are handed on verbatim (kept in step with [`Cmd`] by a test).
const PASS_THROUGH: [&str; 7] = [
    "test",
    "reproduce-table1",
    "reproduce-table2",
    "reproduce-table3",
    "enf",
    "bench",
    "bench-torchdiffeq",
];

/// Inserts `--` after a pass-through command's name, so that clap takes every later argument
/// verbatim: without it clap would swallow a leading `--` meant for cargo (`bench -- --save-baseline`).
fn protect_pass_through(mut args: Vec<OsString>) -> Vec<OsString> {
    if args.len() > 2 && PASS_THROUGH.iter().any(|c| args[1] == *c) {
        args.insert(2, "--".into());
    }
    args
}

fn main() {
    let cli = Cli::parse_from(protect_pass_through(std::env::args_os().collect()));
    match run(cli.command) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Runs one task; returns the process exit code.
fn run(cmd: Cmd) -> Result<i32> {
    let repo = repo_root();
    let tools = toolchain::setup(&repo)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let cargo_cmd = |args: &[&str], extra: Vec<OsString>| {
        let mut c = Command::new(&cargo);
        c.current_dir(&repo).args(args).args(extra);
        c
    };
    let enf = |first: Option<&str>, args: Vec<OsString>| {
        let mut c = cargo_cmd(
            &[
                "run",
                "--release",
                "-p",
                "enf-experiments",
                "--bin",
                "enf",
                "--",
            ],
            Vec::new(),
        );
        c.args(first).args(args);
        c
    };
    let command = match cmd {
        Cmd::Setup => {
            print_summary(&repo, &tools);
            return Ok(0);
        }
        Cmd::Env => {
            // LD_LIBRARY_PATH extends the shell's own value at `eval` time: this process's value
            // carries what `cargo run` added (target/, the Rust sysroot), which a shell should not get.
            for (key, value) in tools.child_env() {
                if key == "LD_LIBRARY_PATH" {
                    let lib = tools.libtorch.env_value.join("lib");
                    println!(
                        "export LD_LIBRARY_PATH={}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}",
                        shell_quote(&lib.to_string_lossy())
                    );
                } else {
                    println!("export {key}={}", shell_quote(&value.to_string_lossy()));
                }
            }
            return Ok(0);
        }
        Cmd::Test(p) => cargo_cmd(&["test", "--workspace", "--release"], p.args),
        Cmd::Bench(p) => cargo_cmd(&["bench", "-p", "enf-benches"], p.args),
        Cmd::ReproduceTable1(p) => enf(Some("reproduce-table1"), p.args),
        Cmd::ReproduceTable2(p) => enf(Some("reproduce-table2"), p.args),
        Cmd::ReproduceTable3(p) => enf(Some("reproduce-table3"), p.args),
        Cmd::Enf(p) => enf(None, p.args),
        Cmd::BenchTorchdiffeq(p) => {
            // The torch wheel's site folder: the parent of the libtorch folder `torch/`.
            let site = tools.libtorch.path.parent().map(PathBuf::from);
            let site = site
                .filter(|s| s.join("torch").join("__init__.py").exists())
                .context(
                    "the torchdiffeq comparison needs the PyPI torch wheel; $LIBTORCH points at a \
                     libtorch without its Python package (unset it to use the project's cache)",
                )?;
            let packages = toolchain::torchdiffeq_packages()?;
            let reference = std::env::var_os("ENF_REFERENCE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo.join("../shared/data/reference-mcmc"));
            let mut c = Command::new(toolchain::find_python()?);
            c.current_dir(&repo)
                .arg("benches/torchdiffeq/compare.py")
                .arg("--reference-dir")
                .arg(reference)
                .args(p.args)
                .env("PYTHONPATH", std::env::join_paths([packages, site])?);
            c
        }
    };
    spawn(command, &tools)
}

/// The workspace root: the parent of xtask's manifest folder (taken at run time when cargo
/// provides it, else at build time).
fn repo_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Runs `command` with the toolchain's environment and returns its exit code (128 + signal
/// number if it was killed by a signal, as shells report it).
fn spawn(mut command: Command, tools: &toolchain::Toolchain) -> Result<i32> {
    use std::os::unix::process::ExitStatusExt;
    command.envs(tools.child_env());
    let shown = format!(
        "{} {}",
        command.get_program().to_string_lossy(),
        command
            .get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    toolchain::note(&format!("running: {shown}"));
    let status = command
        .status()
        .with_context(|| format!("could not start `{shown}` (is cargo on PATH?)"))?;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1))
}

/// What `cargo xtask setup` prints on stdout.
fn print_summary(repo: &std::path::Path, tools: &toolchain::Toolchain) {
    for (name, tool) in [("libtorch", &tools.libtorch), ("cmake", &tools.cmake)] {
        println!(
            "{name:<9} {:<14} {} ({})",
            tool.version.as_deref().unwrap_or("?"),
            tool.path.display(),
            tool.origin
        );
    }
    println!(
        "linked    {}/.toolchain/{{libtorch,cmake}}: plain `cargo build` / `cargo test --release` \
         now work too",
        repo.display()
    );
    println!("shell     eval \"$(cargo xtask env)\" exports LIBTORCH, CMAKE, LD_LIBRARY_PATH");
}

/// Quotes `s` for a POSIX shell if it contains anything beyond safe path characters.
fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:,=@%".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a command line as `cargo xtask` would.
    fn parse(args: &[&str]) -> Cmd {
        let argv = std::iter::once("xtask").chain(args.iter().copied());
        Cli::try_parse_from(protect_pass_through(argv.map(OsString::from).collect()))
            .unwrap()
            .command
    }

    /// The pass-through arguments of a parsed command.
    fn passed(cmd: Cmd) -> Vec<String> {
        let p = match cmd {
            Cmd::Test(p)
            | Cmd::Bench(p)
            | Cmd::ReproduceTable1(p)
            | Cmd::Enf(p)
            | Cmd::BenchTorchdiffeq(p) => p,
            other => panic!("not a pass-through command: {other:?}"),
        };
        p.args
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        let cli = Cli::command();
        cli.clone().debug_assert();
        for sub in cli.get_subcommands() {
            assert_eq!(
                PASS_THROUGH.contains(&sub.get_name()),
                sub.is_disable_help_flag_set(),
                "PASS_THROUGH out of step with `{}`",
                sub.get_name()
            );
        }
    }

    #[test]
    fn pass_through_is_verbatim() {
        assert_eq!(passed(parse(&["reproduce-table1", "--help"])), ["--help"]);
        assert_eq!(
            passed(parse(&["test", "-p", "enf-ode", "--", "--nocapture"])),
            ["-p", "enf-ode", "--", "--nocapture"]
        );
        assert_eq!(
            passed(parse(&["enf", "train", "--config", "x.toml", "-v"])),
            ["train", "--config", "x.toml", "-v"]
        );
        assert_eq!(
            passed(parse(&["bench", "--", "--save-baseline", "main"])),
            ["--", "--save-baseline", "main"]
        );
        assert_eq!(passed(parse(&["enf", "--", "x"])), ["--", "x"]);
        assert_eq!(passed(parse(&["test", "--"])), ["--"]);
        assert!(passed(parse(&["test"])).is_empty());
        assert!(matches!(parse(&["setup"]), Cmd::Setup));
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/a/b:/c"), "/a/b:/c");
        assert_eq!(shell_quote("/a b"), "'/a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
