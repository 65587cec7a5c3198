//! The `edgepull` binary: parse the command line, run it, print the error chain, exit with
//! the documented code.

use std::process::ExitCode;

use clap::Parser;

mod cli;

/// Print an error and each cause on its own line.
fn report(e: &dyn std::error::Error) {
    eprintln!("error: {e}");
    let mut cur = e.source();
    while let Some(s) = cur {
        eprintln!("  caused by: {s}");
        cur = s.source();
    }
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(&e);
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            report(f.error.as_ref());
            ExitCode::from(f.category.code())
        }
    }
}
